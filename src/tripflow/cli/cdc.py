"""`tripflow cdc capture | apply` and `tripflow catalog simulate`: change data capture of
the document catalogue (tripflow.cdc)."""

from __future__ import annotations

import logging
import sys

import typer

from tripflow.cli.console import command_settings, console, friendly_errors

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
def apply(until_idle: float | None = _UNTIL_IDLE,
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Apply the change topic to bronze/catalog_changes and the type-2 dimension
    dim_documents (PostgreSQL and silver/dim_documents), exactly once."""
    _logging(verbose)
    with friendly_errors():
        from tripflow.cdc.apply import apply as run

        summary = run(command_settings(kafka=True), until_idle=until_idle)
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
