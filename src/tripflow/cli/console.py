"""Shared Rich console and error reporting for the command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors tripflow expects (services, settings) into one clear line + exit 1."""
    from tripflow.services import ServiceError

    try:
        yield
    except ServiceError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None
