"""The batch path's commands: `tripflow bronze | silver | marts | backfill | articles`.

Thin: each parses its options, calls one public function, shows progress and prints the
function's one-line summary. Every step is safe to kill and rerun.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tripflow.cli.console import (
    command_settings,
    console,
    err_console,
    expected_error,
    friendly_errors,
)


class DatesError(ValueError):
    pass


def parse_dates(text: str) -> list[dt.date]:
    """`2016-01-01`, `2016-01-01..2016-01-31` or `2016-01-01,2016-01-05`."""
    try:
        if ".." in text:
            first, last = (dt.date.fromisoformat(part.strip()) for part in text.split("..", 1))
            if last < first:
                raise DatesError(f"--dates {text}: the range ends before it starts")
            return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        return sorted({dt.date.fromisoformat(part.strip()) for part in text.split(",")})
    except ValueError as err:
        if isinstance(err, DatesError):
            raise
        raise DatesError(f"--dates {text!r}: expected YYYY-MM-DD, FROM..TO or a comma list "
                         f"({err})") from None


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """One clear line and exit 1 for a failed step; the run log keeps the details."""
    with friendly_errors():
        try:
            yield
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print(f"[yellow]{step} interrupted[/]: safe to rerun `tripflow {step}`")
            raise typer.Exit(130) from None
        except (ValueError, FileNotFoundError) as err:
            err_console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None
        except Exception as err:
            if expected_error(err):
                raise  # friendly_errors: its own message is the line
            err_console.print(
                f"[bold red]error:[/] {step} failed: {type(err).__name__}: {err}\n"
                f"Nothing half-done is visible: fix the cause and rerun `tripflow {step}` "
                f"(`tripflow status` shows the run log).")
            raise typer.Exit(1) from None


@contextmanager
def _progress(description: str, total: bool = True) -> Iterator[Callable[..., None]]:
    """A Rich progress line; yields update(done, total) or update(text)."""
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total:
        columns += [BarColumn(), TextColumn("{task.completed}/{task.total} dates")]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int | str, all_: int | None = None) -> None:
            if isinstance(done, str):
                progress.update(task, description=done)
            else:
                progress.update(task, completed=done, total=all_)

        yield update


_ENGINE_HELP = ("Batch engine: duckdb (in this process) or spark (TRIPFLOW_SPARK_MASTER, "
                "default local[2]); default TRIPFLOW_ENGINE, else duckdb.")


def engine_option() -> str | None:
    return typer.Option(None, "--engine", metavar="duckdb|spark", help=_ENGINE_HELP)


def date_option(text: str | None, changed: bool) -> list[dt.date] | None:
    """The dates of `--dates FROM..TO`, None for `--changed` (or neither)."""
    if text and changed:
        raise DatesError("give --dates or --changed, not both")
    return parse_dates(text) if text else None


def bronze(
    until_idle: float | None = typer.Option(
        None, "--until-idle", metavar="SECONDS",
        help="Stop when no record arrived for this long (default: run until stopped)."),
    batch_rows: int = typer.Option(100_000, "--batch-rows", min=1,
                                   help="Micro-batch size bound (records per Delta commit)."),
    batch_seconds: float = typer.Option(5.0, "--batch-seconds",
                                        help="Micro-batch time bound."),
    partitions: str | None = typer.Option(
        None, "--partitions", metavar="all|0,1,…",
        help="Assign these partitions directly instead of joining the consumer group "
             "tripflow-bronze (no group join delay; one loader per partition set)."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", metavar="PORT",
        help="Serve Prometheus metrics on this port (default: TRIPFLOW_METRICS_PORT; none: "
             "off) on TRIPFLOW_METRICS_HOST (127.0.0.1)."),
) -> None:
    """Copy the topic into the lake's bronze table, exactly once (safe to kill)."""
    from tripflow.messaging.consumer import parse_partitions
    from tripflow.observability.metrics import start_worker_metrics
    from tripflow.processing.bronze import run_bronze

    with step_errors("bronze"), _progress("bronze: starting", False) as show:
        settings = command_settings(kafka=True)
        metrics = start_worker_metrics(settings, "bronze", metrics_port)
        try:
            summary = run_bronze(
                settings, until_idle, max_batch_rows=batch_rows,
                max_batch_seconds=batch_seconds, partitions=parse_partitions(partitions),
                on_progress=lambda s: show(f"bronze: {s.records:,} read, {s.written:,} written"),
                metrics=metrics)
        finally:
            if metrics is not None:
                metrics.close()
    console.print(summary.line(), soft_wrap=True)
    for gap in summary.gaps:
        err_console.print(f"[yellow]warning:[/] not in the topic any more (retention?): {gap}")
    for replaced in summary.replaced:
        err_console.print(f"[yellow]warning:[/] the broker's log was replaced, {replaced}; "
                          "copied from the start of the new log")


def silver(
    dates: str | None = typer.Option(None, "--dates", metavar="FROM..TO",
                                     help="Rebuild these dates (YYYY-MM-DD[..YYYY-MM-DD])."),
    changed: bool = typer.Option(False, "--changed",
                                 help="Rebuild the dates bronze changed since the last "
                                      "--changed run (the default)."),
    chunk_rows: int = typer.Option(80_000, "--chunk-rows", min=1,
                                   help="Dates are rebuilt in groups of about this many bronze "
                                        "rows (one parse, one atomic Delta commit each)."),
    engine: str | None = engine_option(),
) -> None:
    """Rebuild silver (parsed, deduplicated clicks) for dates, from bronze."""
    from tripflow.cli.quality import check_built
    from tripflow.processing.silver import run_silver

    with step_errors("silver"):
        chosen = date_option(dates, changed)
        settings = command_settings()
        with _progress("silver") as show:
            summary = run_silver(settings, chosen, changed=chosen is None,
                                 chunk_rows=chunk_rows, on_progress=show, engine=engine)
    console.print(summary.line(), soft_wrap=True)
    if summary.misplaced:
        err_console.print(f"[yellow]warning:[/] {summary.misplaced} valid clicks sit in another "
                          f"date's bronze partition and were not written; see the run log")
    with step_errors("silver"):
        check_built(settings, summary.dates, "silver")


def marts(
    dates: str | None = typer.Option(None, "--dates", metavar="FROM..TO",
                                     help="Rebuild these dates (YYYY-MM-DD[..YYYY-MM-DD])."),
    changed: bool = typer.Option(False, "--changed",
                                 help="Rebuild the dates silver changed since the last "
                                      "--changed run (the default)."),
    engine: str | None = engine_option(),
    reconcile_all: bool = typer.Option(
        False, "--reconcile-all",
        help="Rewrite mart_realtime_traffic_minute for every date of the run, not only the "
             "dates within the hot marts' 7-day retention."),
    chunk_rows: int = typer.Option(400_000, "--chunk-rows", min=1,
                                   help="Dates are computed in groups of about this many "
                                        "silver rows (bounded memory)."),
) -> None:
    """Rebuild gold and the PostgreSQL cold marts for dates; reconcile the hot minutes."""
    from tripflow.cli.quality import check_built
    from tripflow.marts import run_marts
    from tripflow.marts.reconcile import HOT_RETENTION_DAYS

    with step_errors("marts"):
        chosen = date_option(dates, changed)
        settings = command_settings()
        with _progress("marts") as show:
            summary = run_marts(settings, chosen, changed=chosen is None, engine=engine,
                                reconcile_days=None if reconcile_all else HOT_RETENTION_DAYS,
                                chunk_rows=chunk_rows, on_progress=show)
    console.print(summary.line(), soft_wrap=True)
    with step_errors("marts"):
        check_built(settings, summary.dates, "gold")


def backfill(
    start: str = typer.Option(..., "--from", metavar="DATE", help="First date (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--to", metavar="DATE", help="Last date (YYYY-MM-DD)."),
    engine: str | None = engine_option(),
) -> None:
    """Rebuild silver, then the marts, for every date of a range."""
    from tripflow.cli.quality import check_built
    from tripflow.marts import backfill as run_backfill

    with step_errors("backfill"):
        try:
            first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
        except ValueError as err:
            raise DatesError(f"--from/--to: expected YYYY-MM-DD ({err})") from None
        settings = command_settings()
        with _progress("backfill") as show:
            summary = run_backfill(
                settings, first, last, engine=engine,
                on_progress=lambda step, done, total: (show(f"backfill: {step}"),
                                                       show(done, total)))
    console.print(summary.silver.line(), soft_wrap=True)
    console.print(summary.marts.line(), soft_wrap=True)
    with step_errors("backfill"):
        check_built(settings, summary.marts.dates, "silver", "gold")


def articles(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="allarticles.txt, or a logs.tar.gz holding it.")],
) -> None:
    """Load the document catalogue; mart_popular_documents takes titles from it."""
    from tripflow.marts.articles import load_articles

    with step_errors("articles"), _progress("articles: reading", False):
        summary = load_articles(command_settings(), path)
    console.print(summary.line(), soft_wrap=True)
    console.print("Titles apply to marts built from now on; rebuild older dates with "
                  "`tripflow marts --dates FROM..TO`.")
