"""What the Airflow tasks in dags/ call: one function per task, settings from TRIPFLOW_*.

Each returns a small JSON-able dict (counts, dates, never an address or secret) that
Airflow keeps as the task's result, and raises with a clear message on failure. Each
resolves its settings once (`_resolved`: addresses set, embedded services started when
needed) and hands them down, so the step itself starts nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

from tripflow.settings import Settings, get_settings

log = logging.getLogger("tripflow")


class FreshnessError(RuntimeError):
    """The hot marts lag more than the SLA allows."""


class QualityError(RuntimeError):
    """A data-quality check of severity `fail` failed."""


def _resolved(settings: Settings | None, *, pg: bool = True, kafka: bool) -> Settings:
    from tripflow import services

    return services.resolve(settings or get_settings(), pg=pg, kafka=kafka)


def bronze_to_idle(idle_seconds: float = 10.0, settings: Settings | None = None) -> dict:
    """Copy what the topic holds into bronze, stopping once nothing arrived for a while."""
    from tripflow.processing.bronze import run_bronze

    summary = run_bronze(_resolved(settings, kafka=True), until_idle=idle_seconds)
    log.info(summary.line())
    return {"records": summary.records, "written": summary.written,
            "trimmed": summary.trimmed, "dates": sorted(d.isoformat() for d in summary.dates)}


def silver_changed(settings: Settings | None = None) -> dict:
    """Rebuild silver for the dates bronze appends touched since the last silver run."""
    from tripflow.processing.silver import run_silver

    summary = run_silver(_resolved(settings, kafka=False), changed=True)
    log.info(summary.line())
    return {"dates": [d.isoformat() for d in summary.dates], "clicks": summary.clicks,
            "duplicates": summary.duplicates, "quarantined": summary.quarantined}


def marts_changed(settings: Settings | None = None) -> dict:
    """Rebuild the cold marts of the dates silver changed (and reconcile the hot marts)."""
    from tripflow.marts.run import run_marts

    summary = run_marts(_resolved(settings, kafka=False), changed=True)
    log.info(summary.line())
    return {"dates": [d.isoformat() for d in summary.dates], "rows_out": summary.rows_out}


def quality_changed(settings: Settings | None = None) -> dict:
    """The bronze, silver and gold checks over the dates silver changed since this task's
    last run (results in tripflow.quality_results; the alert webhook told of failures);
    raises when a check of severity `fail` failed."""
    from tripflow.quality.run import run_quality

    report = run_quality(_resolved(settings, kafka=False), changed=True,
                         layers=["bronze", "silver", "gold"])
    log.info(report.line())
    failed = sorted({r.check for r in report.failed})
    if failed:
        raise QualityError(f"quality checks failed: {', '.join(failed)} (run {report.run_id}; "
                           "`tripflow quality --dates …` shows every figure)")
    return {"run_id": str(report.run_id), "dates": [d.isoformat() for d in report.dates or []],
            "warned": sorted({r.check for r in report.warnings})}


def backfill(start: str | dt.date, end: str | dt.date, settings: Settings | None = None) -> dict:
    """Silver + cold marts for every date from `start` to `end` (inclusive)."""
    from tripflow.marts.run import backfill as run_backfill

    first, last = _date(start), _date(end)
    if last < first:
        raise ValueError(f"backfill range is empty: {first} is after {last}")
    summary = run_backfill(_resolved(settings, kafka=False), first, last)
    log.info(summary.line())
    return {"from": first.isoformat(), "to": last.isoformat(), "clicks": summary.silver.clicks,
            "rows_out": summary.marts.rows_out}


def check_hot_freshness(sla_seconds: float | None = None,
                        settings: Settings | None = None) -> dict:
    """Fail when the stream worker's last commit is older than the SLA while records wait.

    An idle topic is not a failure: with nothing to consume, an old last commit is fine.
    """
    from tripflow.processing.stream import hot_status

    # The broker is hot_status's own business: it reports an unreachable one.
    settings = _resolved(settings, kafka=False)
    sla = settings.freshness_sla_seconds if sla_seconds is None else sla_seconds
    status = hot_status(settings)
    if status.freshness_s is None:
        raise FreshnessError("the hot path has never committed a batch: is `tripflow stream` "
                             "running against this database and topic?")
    waiting = sum(max(p.lag or 0, 0) for p in status.partitions)
    result = {"freshness_s": round(status.freshness_s, 1), "sla_s": sla,
              "records_waiting": waiting,
              "clock": status.clock.isoformat() if status.clock else None}
    if status.freshness_s > sla and waiting > 0:
        from tripflow.observability.alerts import Problem, post

        post(settings, "tripflow: hot marts stale", [Problem(
            "hot.freshness", f"hot path, topic {settings.topic}", round(status.freshness_s, 1),
            sla, f"last commit {status.freshness_s:,.0f} s ago, {waiting:,} records waiting")])
        raise FreshnessError(
            f"hot marts are stale: last commit {status.freshness_s:,.0f} s ago (SLA {sla:,.0f} s)"
            f" with about {waiting:,} records waiting; check the `tripflow stream` service")
    return result


def plan_replay(path: str, speed: float, servers: int,
                settings: Settings | None = None) -> list[dict]:
    """One replay plan per simulated web server, all on one shared schedule."""
    from tripflow.ingestion.plan import plan_replay as make_plans

    return make_plans([path], speed, servers)


def replay_server(server_plan: dict, settings: Settings | None = None) -> dict:
    """Replay one simulated web server's share of the records, on the plan's schedule."""
    from tripflow.ingestion.plan import replay_server as run_server

    summary = run_server(server_plan, _resolved(settings, pg=False, kafka=True))
    log.info(summary.line())
    if not summary.ok:
        raise RuntimeError(f"server {server_plan['server']}: {summary.line()}")
    return {"server": server_plan["server"], "sent": summary.sent,
            "delivered": summary.delivered, "failed": summary.failed}


def _date(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
