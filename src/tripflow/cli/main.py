"""The `tripflow` command: a thin shell over the stages' public functions."""

from __future__ import annotations

import typer

from tripflow.cli import (
    batch,
    cdc,
    dashboards,
    demo,
    generate,
    jars,
    metrics,
    produce,
    quality,
    services,
    status,
    stream,
)

app = typer.Typer(
    name="tripflow",
    help="Analytics pipeline for TripClick click logs (Kafka → PostgreSQL marts + Delta Lake).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
# In the order of the data flow.
app.add_typer(services.app, name="services")
app.command()(services.migrate)
app.command()(jars.jars)
app.command()(generate.generate)
app.command()(produce.produce)
app.command()(stream.stream)
for command in (batch.bronze, batch.silver, batch.marts, batch.backfill, batch.articles):
    app.command()(command)
app.add_typer(cdc.catalog_app, name="catalog")
app.add_typer(cdc.app, name="cdc")
app.command()(quality.quality)
app.command()(metrics.metrics)
app.add_typer(dashboards.app, name="dashboards")
app.command()(status.status)
app.command()(demo.demo)
