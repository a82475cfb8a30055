"""`tripflow demo`: every stage that exists, on the embedded defaults, then where to look."""

from __future__ import annotations

from tripflow import db, services
from tripflow.cli.console import console, friendly_errors
from tripflow.settings import get_settings


def demo() -> None:
    """Run the pipeline on the embedded services and print where to look."""
    settings = get_settings()
    with friendly_errors():
        started = services.up(settings)
        dsn = db.prepare(settings)
        endpoints = services.endpoints(settings)
    console.print(f"[green]✓[/] services up ({', '.join(started) or 'already running'})")
    console.print(f"[green]✓[/] schema migrated ({len(db.migrations())} migrations)")
    console.rule("where to look")
    console.print(f"PostgreSQL : {dsn.split('@')[-1]}  "
                  f"(password in {settings.home_dir}/pg_password)")
    console.print(f"Kafka      : {endpoints.kafka_bootstrap}  (topic {settings.topic})")
    console.print(f"Lake       : {settings.lake}")
    console.print("Inspect with `tripflow services status`; stop with `tripflow services down`.")
