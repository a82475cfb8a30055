"""Reconciliation (spec/marts.md): the cold run rewrites `mart_realtime_traffic_minute` for
the dates it rebuilt, from silver — exact values, including late clicks the hot path never
saw — and records how many minutes it changed (the hot/cold drift, a quality figure).

Per date: minutes silver has are inserted or updated when their values differ (only those
get a new `updated_at`); minutes the hot mart has but silver does not are deleted. The
figures go to `tripflow.reconciliation`, one row per date and run.

Only dates inside the hot marts' retention are rewritten: the hot path keeps traffic
minutes for `HOT_RETENTION_DAYS` before its event-time clock and deletes older ones, so
writing years of history into it (a backfill) would be undone at its next refresh. The
window ends at the later of the hot clock (the newest minute in the mart) and the run's
newest date; `retention_days=None` rewrites every date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from tripflow.marts.load import copy_arrow

HOT_RETENTION_DAYS = 7
MART = "mart_realtime_traffic_minute"


@dataclass
class Reconciliation:
    dates: list[dt.date]  # the dates rewritten
    minutes_in_silver: int = 0
    minutes_changed: int = 0  # inserted or updated
    minutes_deleted: int = 0

    @property
    def drift(self) -> int:
        return self.minutes_changed + self.minutes_deleted


def dates_in_window(conn: psycopg.Connection, dates: list[dt.date],
                    retention_days: int | None) -> list[dt.date]:
    """The run's dates the hot mart still keeps (see the module doc)."""
    if retention_days is None or not dates:
        return sorted(dates)
    (clock,) = conn.execute(f"select max(event_minute) from {MART}").fetchone()  # type: ignore[misc]
    newest = max(dates)
    if clock is not None:
        newest = max(newest, clock.astimezone(dt.UTC).date())
    first = newest - dt.timedelta(days=retention_days)
    return sorted(d for d in dates if d >= first)


def reconcile(conn: psycopg.Connection, minutes: pa.Table, dates: list[dt.date]) -> Reconciliation:
    """Rewrite the hot mart's minutes of `dates` from `minutes` (the output of
    reconcile_traffic_minute.sql, any dates), inside the caller's transaction."""
    result = Reconciliation(dates=sorted(dates))
    if not dates:
        return result
    day = pc.cast(pc.cast(minutes.column("event_minute"), pa.timestamp("ms")), pa.date32())
    wanted = pc.is_in(day, pa.array(dates, pa.date32()))
    minutes, day = minutes.filter(wanted), day.filter(wanted)
    conn.execute(
        "create temp table if not exists reconcile_stage (event_minute timestamptz primary key,"
        " total_clicks bigint, unique_sessions bigint, unique_docs bigint)"
        " on commit delete rows")
    conn.execute("delete from reconcile_stage")
    copy_arrow(conn, "reconcile_stage", minutes.select(
        ["event_minute", "total_clicks", "unique_sessions", "unique_docs"]))
    low = dt.datetime.combine(min(dates), dt.time(), dt.UTC)
    high = dt.datetime.combine(max(dates) + dt.timedelta(days=1), dt.time(), dt.UTC)
    deleted = conn.execute(
        f"""delete from {MART} m
            where m.event_minute >= %(low)s and m.event_minute < %(high)s
              and (m.event_minute at time zone 'UTC')::date = any(%(dates)s)
              and not exists (select 1 from reconcile_stage s
                              where s.event_minute = m.event_minute)
            returning (m.event_minute at time zone 'UTC')::date""",
        {"low": low, "high": high, "dates": dates},
    ).fetchall()
    changed = conn.execute(
        f"""insert into {MART} as m (event_minute, total_clicks, unique_sessions, unique_docs,
                                     updated_at)
            select event_minute, total_clicks, unique_sessions, unique_docs, now()
            from reconcile_stage order by event_minute
            on conflict (event_minute) do update set
                total_clicks = excluded.total_clicks,
                unique_sessions = excluded.unique_sessions,
                unique_docs = excluded.unique_docs,
                updated_at = now()
            where (m.total_clicks, m.unique_sessions, m.unique_docs)
                  is distinct from (excluded.total_clicks, excluded.unique_sessions,
                                    excluded.unique_docs)
            returning (m.event_minute at time zone 'UTC')::date""",
    ).fetchall()
    per_date = {d: [0, 0, 0] for d in dates}
    for item in pc.value_counts(day).to_pylist():
        per_date[item["values"]][0] = item["counts"]
    for (d,) in changed:
        per_date[d][1] += 1
    for (d,) in deleted:
        per_date[d][2] += 1
    with conn.cursor() as cur:
        cur.executemany(
            "insert into tripflow.reconciliation (event_date, minutes_in_silver, "
            "minutes_changed, minutes_deleted) values (%s, %s, %s, %s)",
            [(d, *figures) for d, figures in sorted(per_date.items())],
        )
    result.minutes_in_silver = sum(v[0] for v in per_date.values())
    result.minutes_changed = sum(v[1] for v in per_date.values())
    result.minutes_deleted = sum(v[2] for v in per_date.values())
    return result
