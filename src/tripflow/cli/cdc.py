"""`tripflow cdc capture | apply` and `tripflow catalog simulate`: change data capture of
the document catalogue (tripflow.cdc)."""

from __future__ import annotations

import logging
import sys

import psycopg
import typer
from rich.console import Console

from tripflow.cli.console import command_settings, console, friendly_errors
from tripflow.settings import Settings

app = typer.Typer(help="Change data capture of catalog.documents (Debezium).",
                  no_args_is_help=True)
catalog_app = typer.Typer(help="The operational document catalogue (catalog.documents).",
                          no_args_is_help=True)

_UNTIL_IDLE = typer.Option(
    None, "--until-idle", metavar="SECONDS",
    help="Stop when no change arrived for this long (default: run until stopped).")


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    if not verbose:
        logging.getLogger("psycopg").setLevel(logging.WARNING)


@app.command()
def capture(until_idle: float | None = _UNTIL_IDLE,
            verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Publish catalog.documents' changes to <prefix>.catalog.documents (Debezium embedded,
    at least once; safe to kill and rerun)."""
    _logging(verbose)
    with friendly_errors():
        from tripflow.cdc.capture import capture as run

        summary = run(command_settings(kafka=True), until_idle=until_idle)
    console.print(summary.line(), soft_wrap=True)


@app.command()
def setup() -> None:
    """Create (or update) the replication role and the change topic: what Debezium Server
    needs in the cluster setting (deploy/debezium); `capture` does it itself."""
    with friendly_errors():
        from tripflow.cdc.capture import setup as run

        role, topic = run(command_settings(kafka=True))
    console.print(f"cdc setup: replication role {role}, topic {topic}")


@app.command()
def apply(until_idle: float | None = _UNTIL_IDLE,
          verbose: bool = typer.Option(False, "--verbose", "-v"),
          metrics_port: int | None = typer.Option(
              None, "--metrics-port", metavar="PORT",
              help="Serve Prometheus metrics on this port (127.0.0.1 by default; not "
                   "TRIPFLOW_METRICS_PORT, which the stream worker serves).")) -> None:
    """Apply the change topic to bronze/catalog_changes and the type-2 dimension
    dim_documents (PostgreSQL and silver/dim_documents), exactly once."""
    _logging(verbose)
    with friendly_errors():
        from tripflow.cdc.apply import apply as run
        from tripflow.observability.metrics import start_worker_metrics

        settings = command_settings(kafka=True)
        # Only an explicit port: the shared default belongs to the stream worker.
        metrics = (start_worker_metrics(settings, "cdc", metrics_port)
                   if metrics_port is not None else None)
        try:
            summary = run(settings, until_idle=until_idle, metrics=metrics)
        finally:
            if metrics is not None:
                metrics.close()
    console.print(summary.line(), soft_wrap=True)


@catalog_app.command()
def simulate(
    rate: float = typer.Option(5.0, "--rate", metavar="N", help="Edits per second."),
    duration: float = typer.Option(10.0, "--duration", metavar="SECONDS"),
    seed: int | None = typer.Option(None, "--seed", help="Same seed and catalogue: same edits."),
    edits: int | None = typer.Option(None, "--edits", help="Exactly this many edits "
                                     "(instead of --duration)."),
) -> None:
    """Edit catalog.documents as editors would: title corrections, URL fixes, DOIs, new
    documents, deletions (each edit its own transaction)."""
    with friendly_errors():
        from tripflow.cdc.catalog import simulate as run

        summary = run(command_settings(), rate=rate, duration=duration, seed=seed,
                      edits=edits)
    console.print(summary.line(), soft_wrap=True)


def _lsn(value: int | None) -> str:
    """An LSN as PostgreSQL writes it (high/low 32 bits in hex)."""
    return "none" if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def status_section(settings: Settings, out: Console) -> None:
    """`tripflow status`: capture (last LSN, slot lag, changes/s) and apply (dimension)."""
    from tripflow import cdc, db
    from tripflow.cdc.capture import status as capture_status
    from tripflow.db import sqlfiles

    dsn = db.prepare(settings)
    captures = capture_status(dsn)
    if not captures:
        out.print("no capture has run (`tripflow cdc capture`, started by `tripflow demo`)")
    for c in captures:
        lag = "?" if c["lag_bytes"] is None else f"{c['lag_bytes']:,} B of WAL"
        out.print(f"capture  slot {c['slot']} ({'reading' if c['slot_active'] else 'idle'}) → "
                  f"{c['topic']}: {c['changes']:,} changes, {c['changes_per_s']:.2f}/s, last "
                  f"LSN {_lsn(c['last_lsn'])}, confirmed {c['confirmed_lsn']}, lag {lag}, updated "
                  f"{c['updated_at']:%Y-%m-%d %H:%M:%S}", soft_wrap=True)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sqlfiles.queries("cdc", "cdc.sql")["apply_status"],
                           {"topic": cdc.topic(settings)}).fetchone()
    assert row is not None
    versions, current, deleted, changes, newest, applied, documents, positions = row
    delay = "" if newest is None or applied is None else \
        f" (committed {newest:%H:%M:%S}, applied {applied:%H:%M:%S})"
    out.print(f"apply    {changes:,} changes applied{delay}; dim_documents: {versions:,} "
              f"versions, {current:,} current of {documents:,} documents in the catalogue, "
              f"{deleted:,} deleted; positions {positions or 'none'}", soft_wrap=True)
