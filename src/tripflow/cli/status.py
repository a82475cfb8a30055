"""`tripflow status`: what each step did last and what each layer holds.

The command prints a list of sections, each a function of (settings, console). To add
one (e.g. the hot path's offsets and freshness), write a function and append it to
SECTIONS — or call `register_section` from the module that owns the data. A section that
fails prints its error and the others still run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripflow import db, services
from tripflow.cli.console import command_settings, console, friendly_errors
from tripflow.db import sqlfiles
from tripflow.settings import Settings

_SQL = sqlfiles.queries("cli", "status.sql")

SectionFn = Callable[[Settings, Console], None]


@dataclass(frozen=True)
class Section:
    title: str
    show: SectionFn


def runs_section(settings: Settings, out: Console) -> None:
    """The last run of every step, from tripflow.run_log."""
    with db.connect(settings) as conn:
        rows = conn.execute(_SQL["last_runs"]).fetchall()
        (total,) = conn.execute(_SQL["run_count"]).fetchone()  # type: ignore[misc]
    if not rows:
        out.print("no step has run yet")
        return
    table = Table("step", "status", "dates", "in", "out", "dups", "bad", "s", "started (UTC)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    colours = {"ok": "green", "failed": "red", "running": "yellow"}
    details = []
    for step, status, dates, rows_in, rows_out, dups, quarantined, seconds, started, detail \
            in rows:
        table.add_row(step, f"[{colours.get(status, 'white')}]{status}[/]", dates or "-",
                      f"{rows_in:,}", f"{rows_out:,}", f"{dups:,}", f"{quarantined:,}",
                      "-" if seconds is None else f"{seconds:.1f}",
                      started.strftime("%m-%d %H:%M:%S"))
        if detail:
            details.append(f"  {step}: {detail[:240]}")
    out.print(table)
    for line in details:
        out.print(line, soft_wrap=True, highlight=False)
    out.print(f"{total} runs logged; a 'running' row with no finish is a run that was killed "
              "(its step is safe to rerun).")


def lake_section(settings: Settings, out: Console) -> None:
    """Rows and dates per lake table (from the Delta logs, no data read)."""
    # Imported here: every command loads this module, and the stream worker (a long-lived
    # `tripflow stream`) should not carry the Delta Lake library it never uses.
    from tripflow import lake
    from tripflow.marts.engine import mart_names

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("table", no_wrap=True)
    for name in ("version", "rows", "dates"):
        table.add_column(name, justify="right")
    table.add_column("range", no_wrap=True)
    table.add_column("undated", justify="right")
    names = [lake.BRONZE, lake.SILVER, *(lake.gold(m) for m in mart_names()), lake.ARTICLES]
    for name in names:
        delta = lake.open_table(settings, name)
        if delta is None:
            table.add_row(name, "-", "-", "-", "-", "-")
            continue
        per_date = lake.rows_per_date(delta)
        if "event_date" not in delta.metadata().partition_columns:  # gold, reference
            table.add_row(name, str(delta.version()), f"{sum(per_date.values()):,}", "-", "-",
                          "-")
            continue
        dated = sorted(d for d in per_date if d is not None)
        span = f"{dated[0]}..{dated[-1]}" if dated else "-"
        undated = per_date.get(None, 0) if name == lake.BRONZE else "-"
        table.add_row(name, str(delta.version()), f"{sum(per_date.values()):,}",
                      f"{len(dated):,}" if dated else "-", span,
                      f"{undated:,}" if isinstance(undated, int) else undated)
    out.print(table)
    out.print(f"lake: {settings.lake}")


def postgres_section(settings: Settings, out: Console) -> None:
    """Cold marts, quarantine and the batch path's state in PostgreSQL."""
    from tripflow.marts.engine import mart_names

    table = Table("table", "rows", "dates", "last date", box=box.SIMPLE_HEAD, pad_edge=False)
    with db.connect(settings) as conn:
        for mart in mart_names():
            try:
                rows, dates, last = conn.execute(
                    f"select count(*), count(distinct event_date), max(event_date) from {mart}"
                ).fetchone()  # type: ignore[misc]
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                continue
            table.add_row(mart, f"{rows:,}", f"{dates:,}", str(last or "-"))
        out.print(table)
        reasons = conn.execute(_SQL["quarantine_reasons"]).fetchall()
        # Distinct bad records per reason; how often they were seen when more than once.
        out.print("quarantine: " + (", ".join(
            f"{r} {n:,}" + (f" (seen {seen:,} times)" if seen > n else "")
            for r, n, seen in reasons) or "empty"))
        rec = conn.execute(_SQL["last_reconciliation"]).fetchone()
        if rec and rec[0]:
            out.print(f"last reconciliation of mart_realtime_traffic_minute: {rec[0]} dates, "
                      f"{rec[1]:,} minutes changed ({rec[2]:%Y-%m-%d %H:%M:%S} UTC)")
        pending_section(conn, out)
        unmapped_section(conn, out)
        for step, version, updated in conn.execute(_SQL["batch_state"]):
            if step == "silver-undated":
                out.print(f"silver, undated bronze rows: quarantined up to bronze version "
                          f"{version} (as of {updated:%Y-%m-%d %H:%M:%S} UTC)")
                continue
            source = "bronze" if step == "silver" else "silver"
            out.print(f"{step} --changed: up to {source} version {version} "
                      f"(as of {updated:%Y-%m-%d %H:%M:%S} UTC)")


def _span(dates: list[dt.date]) -> str:
    """'2016-03-01', '2016-03-01..2016-03-03' (every date between) or a list (first 10)."""
    if len(dates) == 1:
        return str(dates[0])
    if (dates[-1] - dates[0]).days + 1 == len(dates):
        return f"{dates[0]}..{dates[-1]}"
    shown = ", ".join(map(str, dates[:10]))
    return shown + (f", … {len(dates) - 10} more" if len(dates) > 10 else "")


def pending_section(conn: psycopg.Connection, out: Console) -> None:
    """Dates whose reconciliation of the hot minutes waits for silver to hold every click
    the hot path counted (tripflow.reconciliation_pending), with the latest reason."""
    dates = [d for (d,) in conn.execute(_SQL["pending_dates"])]
    if not dates:
        return
    since, reason = conn.execute(_SQL["pending_since"]).fetchone()  # type: ignore[misc]
    word = "date" if len(dates) == 1 else "dates"
    out.print(f"[yellow]reconciliation pending for {len(dates)} {word} ({_span(dates)}): "
              f"{escape(reason)}[/] (hot minutes kept as they are since "
              f"{since:%Y-%m-%d %H:%M:%S} UTC; a later `tripflow marts` run reconciles them "
              "once silver holds every click the hot path counted)",
              soft_wrap=True, highlight=False)


def unmapped_section(conn: psycopg.Connection, out: Console) -> None:
    """Clinical-area names in the area marts that are not canonical (kept title-cased by
    the normalisation): in mart_clinical_areas, and in the hot trend's latest snapshot."""
    from tripflow.records.areas import CANONICAL_AREAS

    canonical = list(CANONICAL_AREAS)
    cold = conn.execute(_SQL["unmapped_cold"], {"canonical": canonical}).fetchone()
    hot = conn.execute(_SQL["unmapped_hot"], {"canonical": canonical}).fetchone()

    def figures(row: tuple | None) -> str:
        names, clicks, some = row if row else (0, 0, None)
        if not names:
            return "none"
        listed = ", ".join(some or [])
        more = ", …" if names > len(some or []) else ""
        return (f"{names:,} {'name' if names == 1 else 'names'}, {clicks:,} clicks "
                f"({listed}{more})")

    out.print(f"unmapped areas (not among the {len(canonical)} canonical names): "
              f"mart_clinical_areas {escape(figures(cold))}; hot trend's latest snapshot "
              f"{escape(figures(hot))}", soft_wrap=True, highlight=False)


SECTIONS: list[Section] = [
    Section("runs", runs_section),
    Section("lake", lake_section),
    Section("PostgreSQL", postgres_section),
    Section("hot path", lambda s, out: __import__(
        "tripflow.cli.status_hot", fromlist=["x"]).hot_status_section(s, out)),
    Section("change data capture", lambda s, out: __import__(
        "tripflow.cli.cdc", fromlist=["x"]).status_section(s, out)),
]


def register_section(title: str, show: SectionFn) -> None:
    """Add a section (once per title) to `tripflow status`."""
    if all(section.title != title for section in SECTIONS):
        SECTIONS.append(Section(title, show))


def status() -> None:
    """Per-layer counts and the last run of every step."""
    with friendly_errors():
        settings = command_settings()
    # The broker only matters to the hot path's section, which says what is wrong with it.
    with contextlib.suppress(services.ServiceError):
        settings = services.resolve(settings, pg=False, kafka=True)
    # Piped output (scripts, logs) gets a fixed, wide layout instead of Rich's 80 columns.
    out = console if console.is_terminal else Console(width=160)
    for section in SECTIONS:
        out.rule(section.title)
        try:
            section.show(settings, out)
        except Exception as err:  # one broken section must not hide the others
            out.print(f"[red]{section.title}: {type(err).__name__}: {err}[/]")
