"""The run log: one row per step run (step, dates, rows in/out, duplicates, quarantined,
seconds, status), written at start and finished at the end, so a killed run shows as
'running' with no finish time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg


@dataclass
class RunStats:
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    quarantined: int = 0
    dates: str | None = None
    detail: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def tick(timings: dict[str, float], phase: str, since: float) -> float:
    """Add the seconds from `since` (time.monotonic) to now to `phase`; returns now."""
    now = time.monotonic()
    timings[phase] = round(timings.get(phase, 0.0) + now - since, 3)
    return now


def add_timings(total: dict[str, float], more: dict[str, float]) -> None:
    """Add a part's seconds per phase (a group's, a thread's) to the run's."""
    for phase, seconds in more.items():
        total[phase] = round(total.get(phase, 0.0) + seconds, 3)


@contextmanager
def logged_run(dsn: str, step: str, dates: str | None = None) -> Iterator[RunStats]:
    """Record a step run; the caller fills the yielded RunStats as it goes."""
    stats = RunStats(dates=dates)
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        (run_id,) = conn.execute(
            "insert into tripflow.run_log (step, dates, status) values (%s, %s, 'running') "
            "returning run_id",
            (step, dates),
        ).fetchone()  # type: ignore[misc]
    status, detail = "failed", None
    try:
        yield stats
        status = "ok"
    except BaseException as err:
        detail = f"{type(err).__name__}: {err}"[:2000]
        raise
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                """update tripflow.run_log set dates = %s, rows_in = %s, rows_out = %s,
                       duplicates = %s, quarantined = %s, seconds = %s, status = %s,
                       detail = %s, finished_at = now()
                   where run_id = %s""",
                (stats.dates, stats.rows_in, stats.rows_out, stats.duplicates,
                 stats.quarantined, round(time.monotonic() - started, 3), status,
                 detail or stats.detail, run_id),
            )
