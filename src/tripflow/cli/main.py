"""The `tripflow` command: a thin shell over the stages' public functions."""

from __future__ import annotations

import typer

from tripflow.cli import demo, generate, produce, services

app = typer.Typer(
    name="tripflow",
    help="Analytics pipeline for TripClick click logs (Kafka → PostgreSQL marts + Delta Lake).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(services.app, name="services")
app.command()(services.migrate)
app.command()(generate.generate)
app.command()(produce.produce)
app.command()(demo.demo)
