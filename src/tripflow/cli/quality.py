"""`tripflow quality`: run the data-quality checks, store and print their results."""

from __future__ import annotations

import datetime as dt

import typer
from rich.markup import escape
from rich.table import Table

from tripflow.cli.batch import date_option, step_errors
from tripflow.cli.console import command_settings, console, err_console
from tripflow.settings import Settings


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def quality(
    dates: str | None = typer.Option(None, "--dates", metavar="FROM..TO",
                                     help="Check these dates (YYYY-MM-DD[..YYYY-MM-DD])."),
    changed: bool = typer.Option(False, "--changed",
                                 help="Check the dates silver changed since the last "
                                      "--changed run."),
    layer: str | None = typer.Option(None, "--layer", metavar="bronze|silver|gold|hot",
                                     help="Only this layer's checks (default: all)."),
) -> None:
    """Run the data-quality checks, store them in tripflow.quality_results and print them;
    exit 1 when a check of severity `fail` fails."""
    from tripflow.quality.run import run_quality

    with step_errors("quality"):
        chosen = date_option(dates, changed)
        report = run_quality(command_settings(), chosen, changed=changed,
                             layers=[layer] if layer else None)
    # The name says the layer (`silver.…`); details follow the table, one line each, so
    # the table fits an 80-column log.
    table = Table(title="quality checks")
    table.add_column("check", no_wrap=True)
    table.add_column("date", no_wrap=True, min_width=10)
    for heading in ("sev", "status", "observed", "threshold"):
        table.add_column(heading, no_wrap=True)
    for r in report.results:
        status = ("[green]pass[/]" if r.passed else
                  "[bold red]FAIL[/]" if r.severity == "fail" else "[yellow]warn[/]")
        table.add_row(r.check, str(r.event_date or ""), r.severity, status,
                      _number(r.observed), _number(r.threshold))
    console.print(table)
    for r in report.results:
        where = f" {r.event_date}" if r.event_date else ""
        console.print(f"  {r.check}{where}: {escape(r.detail)}", soft_wrap=True,
                      highlight=False)
    console.print(report.line(), soft_wrap=True)
    if report.failed:
        names = ", ".join(sorted({r.check for r in report.failed}))
        console.print(f"[bold red]failed:[/] {names}", soft_wrap=True)
        raise typer.Exit(1)


def check_built(settings: Settings, dates: list[dt.date], *layers: str) -> None:
    """Run the checks of the layers a batch step just built, over its dates: one line, a
    line per failed check; exit 1 when a check of severity `fail` failed."""
    from tripflow.quality.run import run_quality

    if not dates:
        return
    report = run_quality(settings, dates, layers=layers)
    console.print(report.line(), soft_wrap=True, highlight=False)
    for r in report.results:
        if not r.passed and r.event_date is None:
            colour = "bold red" if r.severity == "fail" else "yellow"
            err_console.print(f"[{colour}]{r.severity}:[/] {r.check}: {escape(r.detail)}",
                              soft_wrap=True, highlight=False)
    if report.failed:
        names = ", ".join(sorted({r.check for r in report.failed}))
        err_console.print(f"[bold red]failed:[/] {names} (the data is written; `tripflow "
                          f"quality --dates …` shows every figure)", soft_wrap=True)
        raise typer.Exit(1)
