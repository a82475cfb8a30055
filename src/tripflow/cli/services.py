"""`tripflow services up | down | status` and `tripflow migrate`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tripflow import db, services
from tripflow.cli.console import console, friendly_errors
from tripflow.settings import get_settings

app = typer.Typer(help="Start, stop and show the embedded PostgreSQL and broker.",
                  no_args_is_help=True)


@app.command()
def up(
    broker: str | None = typer.Option(
        None, "--broker", metavar="kafka|tansu",
        help="Embedded broker: Apache Kafka (KRaft, records on disk; needs Java ≥ 17) or tansu "
        "(in memory). Default: TRIPFLOW_BROKER, else the kind this home has, else Kafka "
        "when Java ≥ 17 is present."),
    brokers: int | None = typer.Option(
        None, "--brokers", min=1, max=9,
        help="Apache Kafka brokers on 127.0.0.1 (first start; default TRIPFLOW_BROKERS or 1)."),
) -> None:
    """Start the embedded services (idempotent) and apply the database migrations."""
    settings = get_settings()
    if broker is not None and broker not in ("kafka", "tansu"):
        raise typer.BadParameter("choose kafka or tansu", param_hint="--broker")
    update = {k: v for k, v in (("broker", broker), ("brokers", brokers)) if v is not None}
    settings = settings.model_copy(update=update) if update else settings
    with friendly_errors():
        started = services.up(settings)
        applied = db.migrate(services.pg_dsn(settings))
        db.prepare(settings)
    for item in services.status(settings):
        console.print(f"[green]✓[/] {item.name}: {_redact(item.address)} ({item.note})")
    if not settings.kafka_bootstrap and services.broker_kind(settings) == "tansu":
        console.print(f"[yellow]warning:[/] {services.TANSU_WARNING}")
    console.print(
        f"started: {', '.join(started) or 'nothing (already up)'}; "
        f"migrations applied now: {len(applied)}"
    )


@app.command()
def down() -> None:
    """Stop what this TRIPFLOW_HOME started (never anything else): background workers,
    Superset, the broker and PostgreSQL."""
    from tripflow import dashboards
    from tripflow.services import workers

    settings = get_settings()
    stopped = [name for name in workers.names(settings.home_dir)
               if workers.stop(settings.home_dir, name)]
    if dashboards.stop(settings):
        stopped.append("superset")
    with friendly_errors():
        stopped += services.down(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show each service's address and whether it answers; exit 1 when one is down."""
    settings = get_settings()
    items = {item.name: item for item in services.status(settings)}
    pg, broker = items["postgresql"], items["broker"]
    if as_json:
        print(json.dumps({
            "pg_dsn": pg.address,
            # The read-only role of this database, password included (scripts, BI tools).
            "reader_dsn": db.reader_dsn(settings, pg.address) if pg.address else None,
            "kafka_bootstrap": broker.address,
            "pg": "up" if pg.up else "down",
            "broker": "up" if broker.up else "down",
        }))
    else:
        table = Table("service", "state", "address", "note")
        for item in items.values():
            state = "[green]up[/]" if item.up else "[red]down[/]"
            table.add_row(item.name, state, _redact(item.address) or "-", item.note)
        console.print(table)
    if not (pg.up and broker.up):
        raise typer.Exit(1)


def _redact(address: str | None) -> str | None:
    """Hide a DSN's password on screen (`status --json` keeps it, for scripts)."""
    if address and "://" in address and "@" in address:
        scheme, rest = address.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return address


def migrate() -> None:
    """Apply the database migrations (every command does this itself when needed)."""
    settings = get_settings()
    with friendly_errors():
        applied = db.migrate(services.pg_dsn(settings))
    console.print(f"migrations applied now: {len(applied)} ({', '.join(applied) or 'up to date'})")
