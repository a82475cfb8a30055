"""`tripflow generate`: synthetic TripClick day files with ground truth (manifest.json)."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tripflow.cli.console import console, err_console
from tripflow.records import generate as gen


def generate(
    out: Path = typer.Option(..., "--out", help="Folder for the day files (created)."),
    start: datetime = typer.Option(
        datetime(2016, 1, 1), "--start", formats=["%Y-%m-%d"], help="First date."
    ),
    days: int = typer.Option(7, "--days", min=1, help="Number of days."),
    seed: int = typer.Option(42, "--seed", help="Same seed → identical bytes."),
    sessions_per_day: int = typer.Option(
        gen.DEFAULT_SESSIONS_PER_DAY, "--sessions-per-day", min=0, help="Mean sessions a day."
    ),
    dup_rate: float = typer.Option(0.0, "--dup-rate", min=0.0, max=1.0,
                                   help="Fraction of clicks sent twice."),
    late_rate: float = typer.Option(0.0, "--late-rate", min=0.0, max=1.0,
                                    help="Fraction of clicks written into a later day's file."),
    bad_rate: float = typer.Option(0.0, "--bad-rate", min=0.0, max=1.0,
                                   help="Fraction of bad lines (every quarantine reason)."),
    bots: int = typer.Option(0, "--bots", min=0, help="Bot sessions (60–300 clicks in minutes)."),
    preset: str | None = typer.Option(
        None, "--preset", help="'tripclick': the full 2013–2020 scale (≈ 5.3 M clicks)."
    ),
) -> None:
    """Write synthetic TripClick day files, allarticles.txt and manifest.json."""
    if preset not in (None, "tripclick"):
        err_console.print(f"[red]error:[/] unknown preset {preset!r}; the only one is 'tripclick'")
        raise typer.Exit(2)
    total_days = gen.tripclick_plan(seed).days if preset else days
    began = time.monotonic()
    with Progress(TextColumn("generating {task.fields[day]}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("generate", total=total_days, day="")

        def on_day(day: date, lines: int) -> None:
            progress.update(task, advance=1, day=day.isoformat())

        if preset:
            manifest = gen.generate_preset_tripclick(out, seed=seed, progress=on_day)
        else:
            manifest = gen.generate(
                out, start=start.date(), days=days, seed=seed, sessions_per_day=sessions_per_day,
                dup_rate=dup_rate, late_rate=late_rate, bad_rate=bad_rate, bots=bots,
                progress=on_day,
            )
    totals = manifest.totals
    console.print(
        f"generated {len(manifest.days)} days in {out}: {totals.lines:,} lines, "
        f"{totals.clicks:,} distinct clicks, {totals.sessions:,} sessions, "
        f"{totals.duplicates:,} duplicates, {totals.late:,} late, "
        f"{sum(totals.bad.values()):,} bad, {totals.bots} bots "
        f"in {time.monotonic() - began:.1f} s"
    )
