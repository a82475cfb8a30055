"""The six dashboards: their datasets, charts, layout and filters ("Pipeline health" in
`health`).

Cold dashboards read the cold marts (one row per date × dimension) and carry a date-range
filter. The "Real time" dashboard reads the hot marts through SQL datasets whose windows
are relative to the **latest data**, not to the wall clock: the hot path's "now" is its
event-time clock (spec/marts.md), and replayed or generated logs are historical (2016…), so
a `now() - interval` window would show empty charts. "Last 6 hours" therefore means the
six hours before the newest minute in `mart_realtime_traffic_minute`, and the top-10 and
trend charts show the newest snapshot.
"""

from __future__ import annotations

from tripflow.dashboards import health
from tripflow.dashboards.spec import (
    Axes,
    Chart,
    Column,
    Dashboard,
    Dataset,
    Markdown,
    Metric,
    NativeFilter,
    big_number,
    box_plot,
    heatmap,
    histogram,
    pie,
    table,
    timeseries,
)

DATE = Column("event_date", "DATE", "Date (UTC)", temporal=True)

# How long Superset may serve a chart's cached result: cold marts change per batch run,
# hot marts every few seconds.
COLD_CACHE_S = 60
HOT_CACHE_S = 10
REALTIME_WINDOW_HOURS = 6

# --- datasets -------------------------------------------------------------------------

daily_traffic = Dataset(
    "mart_daily_traffic",
    (DATE,
     Column("total_events", "BIGINT", "Events (clicks)"),
     Column("unique_sessions", "BIGINT", "Unique sessions"),
     Column("unique_documents", "BIGINT", "Unique documents"),
     Column("peak_hour", "INTEGER", "Peak hour (UTC)")),
    (Metric("events", "SUM(total_events)", "Events (clicks)", ",d"),
     Metric("sessions", "SUM(unique_sessions)", "Unique sessions", ",d"),
     Metric("documents", "SUM(unique_documents)", "Unique documents", ",d"),
     Metric("peak_hour", "MAX(peak_hour)", "Peak hour (UTC, 0–23)", "d")),
    "Clicks, sessions and documents per UTC day (cold mart).",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

hourly_traffic = Dataset(
    "mart_hourly_traffic",
    (DATE,
     Column("event_hour", "INTEGER", "Hour of day (UTC)"),
     Column("clicks", "BIGINT", "Clicks"),
     Column("unique_sessions", "BIGINT", "Unique sessions")),
    (Metric("clicks", "SUM(clicks)", "Clicks", ",d"),),
    "Clicks per UTC date and hour of day (cold mart).",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

clinical_areas = Dataset(
    "mart_clinical_areas",
    (DATE,
     Column("clinical_area", "TEXT", "Clinical area"),
     Column("search_count", "BIGINT", "Clicks"),
     Column("unique_sessions", "BIGINT", "Unique sessions")),
    (Metric("clicks", "SUM(search_count)", "Clicks", ",d"),
     Metric("session_days", "SUM(unique_sessions)", "Sessions (distinct per day, summed)",
            ",d"),
     # A window over the aggregate: the share among all areas, not only the rows shown.
     Metric("click_share", "SUM(search_count) * 1.0 / SUM(SUM(search_count)) OVER ()",
            "Share of area clicks (%)", ".1%")),
    "Clicks per UTC day and clinical area; a click tagged with several areas counts in "
    "each (cold mart).",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

sessions = Dataset(
    "mart_session_analysis",
    (Column("session_id", "TEXT", "Session"),
     DATE,
     Column("click_count", "BIGINT", "Clicks in the session"),
     Column("unique_docs", "BIGINT", "Distinct documents"),
     Column("first_click_ts", "TIMESTAMP WITH TIME ZONE", "First click", temporal=True),
     Column("last_click_ts", "TIMESTAMP WITH TIME ZONE", "Last click", temporal=True),
     Column("session_duration_sec", "BIGINT", "Duration (s)"),
     Column("duration_min", "NUMERIC", "Duration (min)",
            expression="session_duration_sec / 60.0"),
     Column("weekday", "TEXT", "Day of week", expression="to_char(event_date, 'ID Dy')"),
     # Labels that sort in size order (digits before letters).
     Column("session_size", "TEXT", "Session size",
            expression="CASE WHEN click_count = 1 THEN '1 click' "
                       "WHEN click_count <= 5 THEN '2–5 clicks' "
                       "WHEN click_count <= 20 THEN '6–20 clicks' "
                       "ELSE 'over 20 clicks' END")),
    (Metric("sessions", "COUNT(*)", "Sessions", ",d"),
     Metric("clicks", "SUM(click_count)", "Clicks", ",d")),
    "One row per session and UTC day it was active (cold mart).",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

documents = Dataset(
    "mart_popular_documents",
    (DATE,
     Column("document_id", "BIGINT", "Document id"),
     Column("title", "TEXT", "Title"),
     Column("view_count", "BIGINT", "Views"),
     Column("unique_sessions", "BIGINT", "Unique sessions"),
     Column("document", "TEXT", "Document",
            expression="COALESCE(NULLIF(title, ''), 'Document ' || document_id)"),
     # For legends: the title cut to 40 characters, then the id (titles repeat).
     Column("document_short", "TEXT", "Document (short)",
            expression="CASE WHEN COALESCE(title, '') = '' THEN 'Document ' || document_id "
                       "WHEN length(title) > 40 THEN left(title, 39) || '… #' || document_id "
                       "ELSE title || ' #' || document_id END")),
    (Metric("views", "SUM(view_count)", "Views (clicks)", ",d"),
     Metric("session_days", "SUM(unique_sessions)", "Sessions (distinct per day, summed)",
            ",d")),
    "Views per UTC day and document, with titles (cold mart).",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

catalog_changes = Dataset(
    "mart_catalog_changes",
    (DATE,
     Column("op", "TEXT", "Change"),
     Column("changes", "BIGINT", "Changes")),
    (Metric("changes_sum", "SUM(changes)", "Catalogue changes", ",d"),),
    "Changes to the document catalogue per UTC day and kind (create, update, delete, "
    "snapshot), from change data capture.",
    time_column="event_date", cache_timeout=COLD_CACHE_S)

realtime_traffic = Dataset(
    "realtime_traffic_recent",
    (Column("event_minute", "TIMESTAMP WITH TIME ZONE", "Minute (UTC)", temporal=True),
     Column("total_clicks", "BIGINT", "Clicks"),
     Column("unique_sessions", "BIGINT", "Unique sessions"),
     Column("unique_docs", "BIGINT", "Unique documents"),
     Column("minutes_before_latest", "NUMERIC", "Minutes before the latest data")),
    (Metric("clicks", "SUM(total_clicks)", "Clicks per minute", ",d"),
     Metric("sessions", "SUM(unique_sessions)", "Unique sessions per minute", ",d"),
     Metric("clicks_last_hour",
            "SUM(CASE WHEN minutes_before_latest < 60 THEN total_clicks ELSE 0 END)",
            "Clicks in the last hour", ",d")),
    f"Traffic per minute over the {REALTIME_WINDOW_HOURS} hours before the newest minute "
    "of data (hot mart; the window follows the event-time clock, not the wall clock).",
    sql=(
        "SELECT m.event_minute, m.total_clicks, m.unique_sessions, m.unique_docs,\n"
        "       EXTRACT(EPOCH FROM (c.latest - m.event_minute)) / 60 "
        "AS minutes_before_latest\n"
        "FROM mart_realtime_traffic_minute m\n"
        "CROSS JOIN (SELECT max(event_minute) AS latest "
        "FROM mart_realtime_traffic_minute) c\n"
        f"WHERE m.event_minute > c.latest - INTERVAL '{REALTIME_WINDOW_HOURS} hours'"),
    cache_timeout=HOT_CACHE_S)

realtime_top_docs = Dataset(
    "realtime_top_docs_latest",
    (Column("snapshot_ts", "TIMESTAMP WITH TIME ZONE", "Snapshot (UTC)", temporal=True),
     Column("rank", "INTEGER", "Rank"),
     Column("document_id", "BIGINT", "Document id"),
     Column("title", "TEXT", "Title"),
     Column("click_count", "BIGINT", "Clicks (last hour)"),
     Column("unique_sessions", "BIGINT", "Unique sessions (last hour)")),
    (Metric("clicks", "SUM(click_count)", "Clicks (last hour)", ",d"),),
    "The newest snapshot of the top documents of the last hour of data (hot mart).",
    sql=("SELECT t.snapshot_ts, t.rank, t.document_id,\n"
         "       COALESCE(NULLIF(t.title, ''), 'Document ' || t.document_id) AS title,\n"
         "       t.click_count, t.unique_sessions\n"
         "FROM mart_realtime_top_docs_1h t\n"
         "WHERE t.snapshot_ts = (SELECT max(snapshot_ts) FROM mart_realtime_top_docs_1h)"),
    cache_timeout=HOT_CACHE_S)

realtime_trend = Dataset(
    "realtime_clinical_trend_latest",
    (Column("snapshot_ts", "TIMESTAMP WITH TIME ZONE", "Snapshot (UTC)", temporal=True),
     Column("clinical_area", "TEXT", "Clinical area"),
     Column("click_count", "BIGINT", "Clicks (last 24 h)"),
     Column("unique_sessions", "BIGINT", "Unique sessions (last 24 h)"),
     Column("trend_pct", "NUMERIC", "Change vs previous 24 h (%)")),
    (Metric("change", "MAX(trend_pct) / 100.0", "Change vs previous 24 h", "+.1%"),
     Metric("clicks", "SUM(click_count)", "Clicks (last 24 h)", ",d")),
    "The newest snapshot of clicks per clinical area over the last 24 hours of data and "
    "their change against the 24 hours before (hot mart).",
    sql=("SELECT t.snapshot_ts, t.clinical_area, t.click_count, t.unique_sessions,\n"
         "       t.trend_pct\n"
         "FROM mart_realtime_clinical_trend_24h t\n"
         "WHERE t.snapshot_ts = "
         "(SELECT max(snapshot_ts) FROM mart_realtime_clinical_trend_24h)"),
    cache_timeout=HOT_CACHE_S)

anomalies = Dataset(
    "mart_realtime_anomaly_sessions",
    (Column("detected_ts", "TIMESTAMP WITH TIME ZONE", "Detected (UTC)", temporal=True),
     Column("session_id", "TEXT", "Session"),
     Column("window_start", "TIMESTAMP WITH TIME ZONE", "Window start (UTC)",
            temporal=True),
     Column("window_end", "TIMESTAMP WITH TIME ZONE", "Last click (UTC)", temporal=True),
     Column("click_count", "BIGINT", "Peak clicks in 5 min"),
     Column("severity", "TEXT", "Severity")),
    (Metric("episodes", "COUNT(*)", "Anomaly episodes", ",d"),),
    "Sessions with 50 or more clicks within 5 minutes, one row per episode (hot mart).",
    cache_timeout=HOT_CACHE_S)

DATASETS: tuple[Dataset, ...] = (daily_traffic, hourly_traffic, clinical_areas, sessions,
                                 documents, catalog_changes, realtime_traffic, realtime_top_docs,
                                 realtime_trend, anomalies, *health.DATASETS)

DAY = Axes(x="Date (UTC)")


def _daily_traffic() -> Dashboard:
    # The latest day of the selected range, with its trend over the range.
    numbers = (
        big_number("daily_latest_events", "Events on the latest day", daily_traffic,
                   metric="events", x="event_date", subtitle="clicks"),
        big_number("daily_latest_sessions", "Sessions on the latest day", daily_traffic,
                   metric="sessions", x="event_date", subtitle="unique sessions"),
        big_number("daily_latest_documents", "Documents on the latest day", daily_traffic,
                   metric="documents", x="event_date", subtitle="distinct documents clicked"),
        big_number("daily_latest_peak_hour", "Peak hour on the latest day", daily_traffic,
                   metric="peak_hour", x="event_date", y_format="d", compare=False,
                   subtitle="hour of day (UTC) with the most clicks"),
    )
    events = timeseries("daily_events", "Events per day", daily_traffic, kind="line",
                        x="event_date", metrics=["events"],
                        axes=Axes(x="Date (UTC)", y="Clicks per day"))
    sessions_bar = timeseries("daily_sessions", "Unique sessions per day", daily_traffic,
                              kind="bar", x="event_date", metrics=["sessions"],
                              axes=Axes(x="Date (UTC)", y="Sessions per day"))
    hours = heatmap("daily_hourly_heatmap",
                    "Clicks by date and hour of day (UTC; colour = clicks per hour)",
                    hourly_traffic, x="event_date", y="event_hour", metric="clicks")
    return Dashboard(
        "tripflow_daily_traffic", "Daily traffic",
        (numbers, (events, sessions_bar), (hours,)),
        (NativeFilter("date_range", "Date range"),),
        description="Clicks, sessions and documents per UTC day, from the cold marts.")


def _clinical_areas() -> Dashboard:
    share = pie("areas_share", "Share of clicks by clinical area", clinical_areas,
                groupby="clinical_area", metric="clicks", width=6)
    top = table("areas_top10", "Top 10 clinical areas by clicks", clinical_areas,
                groupby=["clinical_area"], metrics=["clicks", "click_share", "session_days"],
                row_limit=10, no_bars=("click_share",), width=6)
    trend = timeseries("areas_trend", "Clicks per day, 10 largest clinical areas",
                       clinical_areas, kind="area", x="event_date", metrics=["clicks"],
                       groupby=["clinical_area"], series_limit=10,
                       axes=Axes(x="Date (UTC)", y="Clicks per day"), width=12, height=60)
    return Dashboard(
        "tripflow_clinical_areas", "Clinical areas", ((share, top), (trend,)),
        (NativeFilter("date_range", "Date range"),
         NativeFilter("clinical_area", "Clinical area", clinical_areas, "clinical_area")),
        description="Which clinical areas users search, and how that changes.")


def _sessions() -> Dashboard:
    durations = histogram(
        "sessions_duration", "Session duration, sessions of 2 or more clicks (minutes)",
        sessions, column="duration_min", where="click_count >= 2", bins=30,
        axes=Axes(x="Duration (minutes)", y="Sessions"))
    # Bots (50+ clicks in minutes, see "Real time") would squash the boxes to a line.
    clicks = box_plot(
        "sessions_clicks_box", "Clicks per session by day of week (sessions under 50 clicks)",
        sessions, where="click_count < 50",
        distribute=["session_id", "event_date"], groupby=["weekday"], metric="clicks",
        axes=Axes(x="Day of week (UTC)", y="Clicks per session"))
    per_day = timeseries(
        "sessions_per_day", "Sessions per day, by session size", sessions, kind="bar",
        x="event_date", metrics=["sessions"], groupby=["session_size"], stack=True,
        series_by_name=True, axes=Axes(x="Date (UTC)", y="Sessions per day"), width=12)
    return Dashboard(
        "tripflow_sessions", "Sessions", ((durations, clicks), (per_day,)),
        (NativeFilter("date_range", "Date range"),),
        description="How long sessions last and how many clicks they make.")


def _popular_documents() -> Dashboard:
    top = table("documents_top20", "Top 20 documents in the selected period", documents,
                groupby=["document_id", "document"], metrics=["views", "session_days"],
                row_limit=20, no_bars=("document_id",), width=12, height=90)
    views = timeseries(
        "documents_views", "Views per day of the selected documents (default: top 5)",
        documents, kind="line", x="event_date", metrics=["views"],
        groupby=["document_short"],
        series_limit=5, axes=Axes(x="Date (UTC)", y="Views per day"), width=12, height=60)
    edits = timeseries(
        "documents_catalog_changes", "Catalogue changes per day (change data capture)",
        catalog_changes, kind="bar", x="event_date", metrics=["changes_sum"],
        groupby=["op"], stack=True, series_by_name=True,
        axes=Axes(x="Date (UTC)", y="Changes per day"), width=12, height=50)
    return Dashboard(
        "tripflow_popular_documents", "Popular documents", ((top,), (views,), (edits,)),
        (NativeFilter("date_range", "Date range"),
         NativeFilter("document", "Document", documents, "document_short",
                      charts=(views.key,),
                      description="Documents to draw in the views-over-time chart",
                      search_all=True)),
        description="The most viewed documents and their views over time.")


def _real_time() -> Dashboard:
    note = Markdown(
        "realtime_note",
        "**Real time** — from the hot marts, refreshed every minute. Times are relative to "
        "the **latest data** (the pipeline's event-time clock), so replayed historical logs "
        f"show their own last {REALTIME_WINDOW_HOURS} hours rather than an empty window.",
        height=8)
    last_hour = big_number("realtime_clicks_last_hour", "Clicks in the last hour",
                           realtime_traffic, metric="clicks_last_hour",
                           subtitle="clicks in the 60 minutes up to the latest data",
                           width=3, height=50)
    per_minute = timeseries(
        "realtime_per_minute",
        f"Clicks and unique sessions per minute, last {REALTIME_WINDOW_HOURS} hours of data",
        realtime_traffic, kind="line", x="event_minute", grain="PT1M",
        metrics=["clicks", "sessions"], time_format="%H:%M", markers=False,
        axes=Axes(x="Time (UTC)", y="Per minute"), width=9, height=50)
    top = table("realtime_top_docs", "Top 10 documents, last hour of data",
                realtime_top_docs,
                columns=["rank", "document_id", "title", "click_count", "unique_sessions"],
                # A filter rather than the row limit picks the ten, so Superset does not
                # flag the chart as cut off by its limit.
                where="rank <= 10", order_by="rank", ascending=True, row_limit=20,
                no_bars=("rank", "document_id"), width=7, height=84)
    trend = timeseries(
        "realtime_area_trend", "Clinical areas: change of clicks, last 24 h of data vs the "
        "24 h before", realtime_trend, kind="bar",
        description="No bar: the area had no clicks in the 24 h before (trend_pct is null).",
        x="clinical_area", grain=None, metrics=["change"], show_value=True,
        sort_by_metric=True, rotate_labels=True, y_format="+.0%",
        axes=Axes(y="Change of clicks (%)", x_margin=15), width=12, height=60)
    table_anomalies = table(
        "realtime_anomalies", "Anomaly sessions (50+ clicks within 5 minutes)", anomalies,
        columns=["detected_ts", "severity", "session_id", "click_count", "window_start",
                 "window_end"],
        order_by="detected_ts", row_limit=100, width=12, height=40)
    episodes = timeseries(
        "realtime_anomaly_episodes", "Anomaly episodes per hour, by severity", anomalies,
        kind="bar", x="detected_ts", grain="PT1H", metrics=["episodes"],
        groupby=["severity"], stack=True, time_format="%Y-%m-%d %H:%M",
        axes=Axes(x="Hour detected (UTC)", y="Episodes per hour"), width=5, height=84)
    return Dashboard(
        "tripflow_real_time", "Real time",
        ((note,), (last_hour, per_minute), (trend,), (top, episodes), (table_anomalies,)),
        (NativeFilter("clinical_area", "Clinical area", realtime_trend, "clinical_area",
                      charts=(trend.key,)),),
        refresh_seconds=60,
        description="The hot path's view: the last hours of traffic, top documents, "
                    "clinical-area trends and anomalous sessions.")


def dashboards() -> tuple[Dashboard, ...]:
    return (_daily_traffic(), _clinical_areas(), _sessions(), _popular_documents(),
            _real_time(), health.pipeline_health())


def charts() -> list[Chart]:
    return [chart for dashboard in dashboards() for chart in dashboard.charts()]
