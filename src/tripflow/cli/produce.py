"""`tripflow produce PATH...`: publish day files (or a logs.tar.gz) to the raw-log topic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tripflow.cli.console import command_settings, console, err_console, friendly_errors
from tripflow.ingestion import Mode, ProduceProgress
from tripflow.ingestion import produce as run_produce
from tripflow.ingestion.admin import DEFAULT_CONNECT_TIMEOUT_S
from tripflow.records.rules import MS_PER_MINUTE, ONE_DAY_MS

EXIT_INTERRUPTED = 130  # the shell's convention for "ended by Ctrl-C"


def produce(
    paths: Annotated[list[Path], typer.Argument(
        help="Day files (YYYY-MM-DD.json), folders of them, or a logs.tar.gz.",
    )],
    mode: Annotated[Mode, typer.Option(
        "--mode", case_sensitive=False,
        help="bulk: as fast as possible; replay: in event-time order at --speed.",
    )] = Mode.BULK,
    speed: Annotated[float, typer.Option(
        "--speed", help="Replay speed: 600 = ten hours of log a minute.",
    )] = 1.0,
    rebase: Annotated[str | None, typer.Option(
        "--rebase", metavar="now",
        help="Replay only: move DateCreated so the first record is now (the original is "
             "kept in OriginalDateCreated), so the replay looks live.",
    )] = None,
    reorder_minutes: Annotated[float, typer.Option(
        "--reorder-minutes", min=0,
        help="Replay only: a record read up to this much later than its event time is "
             "put back in its place; a later one is sent where it was read (late, as a "
             "live system saw it). Default: a day.",
    )] = ONE_DAY_MS / MS_PER_MINUTE,
    servers: Annotated[int, typer.Option(
        "--servers", min=1, max=64,
        help="Simulated web servers, each its own producer. In bulk each goes at its own "
             "pace, so a partition can interleave days: for the hot path, send a backlog "
             "with 1 (or --mode replay).",
    )] = 2,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for the broker before giving up.",
    )] = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Publish TripClick log lines to the topic, as N web servers would."""
    with friendly_errors():  # the topic's broker, started here when embedded and down
        settings = command_settings(pg=False, kafka=True)
    display = _Display(mode)
    with friendly_errors():  # (IngestionError: one line, printed once the display is gone)
        try:
            summary = run_produce(
                paths, settings, mode=mode, speed=speed, rebase=rebase, servers=servers,
                reorder_horizon_ms=round(reorder_minutes * MS_PER_MINUTE),
                progress=display.update, connect_timeout_s=timeout,
            )
        finally:
            display.close()

    if summary.topic.warning:
        err_console.print(f"[yellow]warning:[/] {summary.topic.warning}")
    if summary.errors:
        for message, count in sorted(summary.errors.items(), key=lambda item: -item[1])[:5]:
            err_console.print(f"[red]delivery failed[/] for {count:,} record(s): {message}")
    # markup off: "[bulk, 2 servers]" is text, not a Rich style tag.
    console.print(summary.line(), soft_wrap=True, markup=False, highlight=False)
    if summary.first_event_ms is not None and summary.last_event_ms is not None:
        console.print(f"event time replayed: {_iso(summary.first_event_ms)} → "
                      f"{_iso(summary.last_event_ms)}", soft_wrap=True, highlight=False)
    if summary.failed or summary.unconfirmed or summary.fatal_error:
        err_console.print("[red]some records were not delivered:[/] check the broker "
                          "(`tripflow services status`) and run the same command again; "
                          "downstream deduplicates what arrives twice.")
        raise typer.Exit(1)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _iso(epoch_ms: int) -> str:
    try:
        return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_ms} ms"


class _Display:
    """The Rich progress line, started at the first update, so that an error raised
    before anything is sent (unreachable broker, bad input) is the only output."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.progress: Progress | None = None
        self.task: int | None = None

    def update(self, state: ProduceProgress) -> None:
        if self.progress is None:
            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=console, transient=True,
                disable=not console.is_terminal,  # logs and pipes get the summary only
            )
            self.progress.start()
            self.task = self.progress.add_task("")
        rate = state.delivered / state.seconds if state.seconds > 0 else 0.0
        plural = "s" if state.servers != 1 else ""
        text = (f"{state.mode.value}, {state.servers} server{plural}: read {state.read:,} · sent "
                f"{state.sent:,} · delivered {state.delivered:,} · failed {state.failed:,} · "
                f"{rate:,.0f}/s")
        if state.event_ms is not None:
            text += f" · event time {_iso(state.event_ms)}"
        elif state.file:
            text += f" · {state.file}"
        if state.stopping:
            text += " · [yellow]stopping: flushing what is in flight[/]"
        assert self.task is not None
        self.progress.update(self.task, description=text)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
