"""Refresh of the four real-time marts from the hot store (spec/marts.md, "Hot marts").

The definitions are the SQL files in `tripflow/marts/hot/`. `refresh` runs them inside the
batch's transaction, after the batch's new clicks are in `hot_new` and while the refresh
lock is held (see `tripflow.processing.hotstore`), touching only what changed:
- the minutes that received new clicks (recomputed from every stored click of the minute);
- the top-20 and clinical-trend snapshots at snapshot_ts = the clock truncated to the
  minute (a later refresh in the same minute replaces that minute's snapshot);
- the anomaly episodes of the sessions that received new clicks.
Every figure is computed from the whole store, never from the batch alone, so the marts are
exact however the clicks were split into batches or spread over workers.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from tripflow.db import sqlfiles

if TYPE_CHECKING:
    from tripflow.processing.hotstore import HotOptions

EPISODE_WINDOW = timedelta(minutes=5)
_NO_LOWER_BOUND = datetime(1, 1, 1, tzinfo=UTC)


def _load() -> dict[str, list[str]]:
    return {name: sqlfiles.statements("marts/hot", f"{name}.sql") for name in (
        "traffic_minute", "top_docs_1h", "clinical_trend_24h", "anomaly_sessions")}


_SQL = _load()


def snapshot_ts(clock: datetime) -> datetime:
    """The snapshot time of a clock: truncated to the minute."""
    return clock.replace(second=0, microsecond=0)


def refresh(
    conn: psycopg.Connection,
    *,
    clock: datetime,
    store_from: datetime | None,
    options: HotOptions,
    timings: dict[str, float] | None = None,
) -> None:
    """Refresh the marts for the clicks in `hot_new` (caller holds the refresh lock)."""
    params = {
        "clock": clock,
        "snapshot_ts": snapshot_ts(clock),
        "retention": options.mart_retention,
        # Episodes are exact from 5 min after the first stored instant on.
        "exact_from": (store_from + EPISODE_WINDOW) if store_from is not None else _NO_LOWER_BOUND,
    }
    for name, statements in _SQL.items():
        started = time.perf_counter()
        for statement in statements:
            conn.execute(statement, params)
        if timings is not None:
            timings[name] = round((time.perf_counter() - started) * 1000, 2)
