"""Shared Rich console and error reporting for the command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from tripflow.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)


# Errors whose message says what went wrong and what to do: (module, class).
_EXPECTED_ERRORS = (
    ("tripflow.services", "ServiceError"),
    ("tripflow.ingestion.admin", "IngestionError"),
    ("tripflow.messaging.config", "SecurityConfigError"),
    ("tripflow.messaging.consumer", "ConsumerError"),
    ("tripflow.processing.bronze", "BronzeError"),
    ("tripflow.dashboards.superset", "SupersetError"),
    ("tripflow.cdc", "CdcError"),
)


def expected_error(err: BaseException) -> bool:
    """Whether `err` is one of the errors whose message alone tells the user what to do."""
    # An error's module is loaded once it was raised: looked up, not imported (some
    # import heavy libraries).
    return any(isinstance(err, getattr(sys.modules.get(module), name, ()))
               for module, name in _EXPECTED_ERRORS)


def command_settings(*, pg: bool = True, kafka: bool = False) -> Settings:
    """The command's settings, resolved once, before any step runs: the addresses it
    needs set (`services.resolve`: the embedded services started here when not running)
    and, with `pg`, the database migrated. Steps handed these settings start nothing.
    Call it inside the command's error handling (a service that cannot start is one line)."""
    from tripflow import db, services

    settings = services.resolve(get_settings(), pg=pg, kafka=kafka)
    if pg:
        db.prepare(settings)
    return settings


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors tripflow expects (services, broker, topic, bronze, Superset) into
    one clear line + exit 1; anything else keeps its traceback."""
    try:
        yield
    except Exception as err:
        if not expected_error(err):
            raise
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None
