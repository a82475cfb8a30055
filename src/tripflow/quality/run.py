"""Run the registered checks (`tripflow.quality.checks`) and store their results in
`tripflow.quality_results`, one run id per call."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from tripflow import db, lake
from tripflow.quality.checks import CHECKS, LAYERS, Result, Scope
from tripflow.settings import Settings

STATE_STEP = "quality"  # tripflow.batch_state: the silver version the last --changed run read

_INSERT = """
insert into tripflow.quality_results (run_id, check_name, layer, event_date, severity, status,
                                      observed, threshold, detail)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""


@dataclass(frozen=True)
class QualityReport:
    run_id: uuid.UUID
    dates: list[dt.date] | None  # None: every date
    results: list[Result]

    @property
    def failed(self) -> list[Result]:
        """Failed checks of severity 'fail': the run fails."""
        return [r for r in self.results if r.fails_run]

    @property
    def warnings(self) -> list[Result]:
        return [r for r in self.results if not r.passed and r.severity == "warn"]

    def line(self) -> str:
        checks = len({r.check for r in self.results})
        scope = ("every date" if self.dates is None else
                 f"{len(self.dates)} dates" if self.dates else "no changed date")
        return (f"quality: {checks} checks over {scope}, "
                f"{len({r.check for r in self.failed})} failed, "
                f"{len({r.check for r in self.warnings})} warned; run {self.run_id}")


def run_quality(settings: Settings, dates: Iterable[dt.date] | None = None, *,
                changed: bool = False, layers: Iterable[str] | None = None) -> QualityReport:
    """Run the checks of `layers` (default: all) over `dates` (None: every date; with
    `changed`, the dates silver changed since the last `changed` run), store the results
    and return them. Checks never raise for bad data: they fail."""
    wanted = set(layers or LAYERS)
    unknown = wanted - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layer {', '.join(sorted(unknown))}: "
                         f"use one of {', '.join(LAYERS)}")
    run_id = uuid.uuid4()
    with db.connect(settings, autocommit=True) as conn:
        chosen, silver = _dates(settings, conn, dates, changed)
        scope = Scope(settings, conn, chosen)
        results: list[Result] = []
        for check in CHECKS:
            if check.layer in wanted:
                results += check.run(scope, check)
        with conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [
                    (run_id, r.check, r.layer, r.event_date, r.severity, r.status, r.observed,
                     r.threshold, r.detail) for r in results])
            if changed and silver is not None:
                from tripflow.processing.silver import write_state
                write_state(conn, STATE_STEP, silver)
    report = QualityReport(run_id, chosen, results)
    from tripflow.observability.alerts import alert_quality

    alert_quality(settings, report)  # TRIPFLOW_ALERT_WEBHOOK, when set
    return report


def _dates(settings: Settings, conn, dates: Iterable[dt.date] | None,  # type: ignore[no-untyped-def]
           changed: bool):
    """The dates to check and, for `changed`, the silver table whose version to remember."""
    if dates is not None:
        if changed:
            raise ValueError("give dates or changed, not both")
        return sorted(set(dates)), None
    if not changed:
        return None, None
    from tripflow.processing.silver import read_state

    silver = lake.open_table(settings, lake.SILVER)
    if silver is None:
        return [], None
    touched = lake.changed_dates(silver, read_state(conn, STATE_STEP, silver))
    return sorted(d for d in touched if d is not None), silver
