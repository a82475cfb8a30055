"""The "Pipeline health" dashboard: quality results over time, hot/cold drift, the hot
path's freshness, the quarantine by reason and the consumer lag.

It reads the `health_*` views (migration 0020) that the read-only role may select: the
quality checks' stored results (`tripflow quality` and the batch steps), reconciliation's
drift of the dates the hot path had, the hot path's last commit, quarantined records per
reason, and the lag samples `tripflow metrics` keeps (a minute apart).
"""

from __future__ import annotations

from tripflow.dashboards.spec import (
    Axes,
    Column,
    Dashboard,
    Dataset,
    Metric,
    NativeFilter,
    big_number,
    pie,
    table,
    timeseries,
)

CACHE_S = 30

quality_results = Dataset(
    "health_quality_results",
    (Column("checked_at", "TIMESTAMP WITH TIME ZONE", "Checked (UTC)", temporal=True),
     Column("check_name", "TEXT", "Check"),
     Column("layer", "TEXT", "Layer"),
     Column("event_date", "DATE", "Date checked (UTC)", temporal=True),
     Column("severity", "TEXT", "Severity"),
     Column("status", "TEXT", "Status"),
     Column("observed", "NUMERIC", "Observed"),
     Column("threshold", "NUMERIC", "Threshold"),
     Column("detail", "TEXT", "Detail"),
     Column("failed", "INTEGER", "Failed (1) or passed (0)")),
    (Metric("failures", "SUM(failed)", "Failed results", ",d"),
     Metric("results", "COUNT(*)", "Results", ",d")),
    "Every stored data-quality result: one row per check and run, and one per date that "
    "broke a per-date check.",
    time_column="checked_at", cache_timeout=CACHE_S)

drift = Dataset(
    "health_drift",
    (Column("event_date", "DATE", "Date (UTC)", temporal=True),
     Column("reconciled_at", "TIMESTAMP WITH TIME ZONE", "Reconciled (UTC)", temporal=True),
     Column("minutes_in_silver", "BIGINT", "Minutes in silver"),
     Column("minutes_in_hot", "BIGINT", "Minutes the hot mart had"),
     Column("minutes_rewritten", "BIGINT", "Minutes rewritten"),
     Column("drift_rate", "NUMERIC", "Drift (share of minutes rewritten)")),
    (Metric("drift", "MAX(drift_rate)", "Drift (share of minutes rewritten)", ".2%"),
     Metric("rewritten", "SUM(minutes_rewritten)", "Minutes rewritten", ",d")),
    "Hot/cold drift per date: the share of the date's minutes reconciliation rewrote, for "
    "the dates the hot path had.",
    time_column="event_date", cache_timeout=CACHE_S)

freshness = Dataset(
    "health_freshness",
    (Column("last_commit_at", "TIMESTAMP WITH TIME ZONE", "Last commit (UTC)", temporal=True),
     Column("clock", "TIMESTAMP WITH TIME ZONE", "Event-time clock (UTC)", temporal=True),
     Column("freshness_seconds", "NUMERIC", "Seconds since the last commit")),
    (Metric("freshness", "MAX(freshness_seconds)", "Seconds since the last commit", ",.0f"),),
    "The hot path's freshness now: seconds since its last committed batch.",
    cache_timeout=CACHE_S)

quarantine = Dataset(
    "health_quarantine",
    (Column("reason", "TEXT", "Reason"),
     Column("first_seen_date", "DATE", "First seen (UTC)", temporal=True),
     Column("records", "BIGINT", "Distinct bad records"),
     Column("sightings", "BIGINT", "Sightings")),
    (Metric("records", "SUM(records)", "Distinct bad records", ",d"),
     Metric("sightings", "SUM(sightings)", "Sightings", ",d")),
    "Quarantined records per reason and day first seen.",
    time_column="first_seen_date", cache_timeout=CACHE_S)

consumer_lag = Dataset(
    "health_consumer_lag",
    (Column("sampled_at", "TIMESTAMP WITH TIME ZONE", "Sampled (UTC)", temporal=True),
     Column("consumer_group", "TEXT", "Consumer group"),
     Column("topic", "TEXT", "Topic"),
     Column("partition", "INTEGER", "Partition"),
     Column("lag", "BIGINT", "Records waiting")),
    (Metric("lag", "SUM(lag)", "Records waiting", ",d"),),
    "Records the hot path had not stored yet, per partition, sampled by `tripflow metrics`.",
    time_column="sampled_at", cache_timeout=CACHE_S)

DATASETS: tuple[Dataset, ...] = (quality_results, drift, freshness, quarantine, consumer_lag)


def pipeline_health() -> Dashboard:
    fresh = big_number("health_freshness", "Hot path: seconds since the last commit",
                       freshness, metric="freshness", y_format=",.0f",
                       subtitle="over TRIPFLOW_FRESHNESS_SLA_SECONDS with records waiting: "
                                "stale", width=4, height=50)
    failures = timeseries(
        "health_quality_failures", "Quality results per day, and how many failed",
        quality_results, kind="bar", x="checked_at", metrics=["failures", "results"],
        stack=False, axes=Axes(x="Day checked (UTC)", y="Results per day"), width=8,
        height=50)
    latest = table(
        "health_quality_latest", "Quality results, newest first", quality_results,
        columns=["checked_at", "check_name", "event_date", "severity", "status", "observed",
                 "threshold"],
        order_by="checked_at", row_limit=60, no_bars=("observed", "threshold"), width=12,
        height=70)
    drifts = timeseries(
        "health_drift", "Hot/cold drift per date (share of minutes reconciliation rewrote)",
        drift, kind="bar", x="event_date", metrics=["drift"], y_format=".1%",
        axes=Axes(x="Date (UTC)", y="Minutes rewritten (%)"), width=6)
    reasons = pie("health_quarantine", "Quarantined records by reason", quarantine,
                  groupby="reason", metric="records", width=6, height=50)
    lag = timeseries(
        "health_consumer_lag", "Hot path consumer lag per partition", consumer_lag,
        kind="line", x="sampled_at", grain="PT1M", metrics=["lag"], groupby=["partition"],
        time_format="%Y-%m-%d %H:%M",
        axes=Axes(x="Time (UTC)", y="Records waiting"), width=12)
    return Dashboard(
        "tripflow_pipeline_health", "Pipeline health",
        ((fresh, failures), (latest,), (drifts, reasons), (lag,)),
        # Freshness is "now": the range applies to the other charts.
        (NativeFilter("date_range", "Date range",
                      charts=(failures.key, latest.key, drifts.key, reasons.key, lag.key)),),
        refresh_seconds=60,
        description="Is the pipeline right, on time and up: quality results, drift, "
                    "freshness, quarantine and consumer lag.")
