"""`tripflow dashboards build | import | serve | stop | status | install`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from tripflow import dashboards, services
from tripflow.cli.console import command_settings, console, err_console, friendly_errors
from tripflow.dashboards import superset
from tripflow.settings import get_settings

app = typer.Typer(help="Superset dashboards generated from code: build, import, serve.",
                  no_args_is_help=True)


@contextmanager
def _errors() -> Iterator[None]:
    with friendly_errors():
        try:
            yield
        except dashboards.SupersetError as err:
            err_console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(1) from None


@app.command()
def build(out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the zip (default "
        "$TRIPFLOW_HOME/superset/tripflow_dashboards.zip).")] = None) -> None:
    """Write the Superset import bundle (zip of YAML); it holds no password."""
    with _errors():
        # The bundle names the database (no migration needed to write it).
        path = dashboards.build_bundle(services.resolve(get_settings(), kafka=False), out)
    console.print(f"[green]✓[/] bundle written: {path}")


@app.command("import")
def import_() -> None:
    """Rebuild the bundle and import it into this home's Superset (running or not)."""
    with _errors():
        result = dashboards.import_bundle(command_settings())
    console.print(f"[green]✓[/] imported {len(result['dashboards'])} dashboards and "
                  f"{result['charts']} charts (database {result['database']})")


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(
        "--port", help="Port on 127.0.0.1 (default TRIPFLOW_SUPERSET_PORT, else 8088).")] = None,
    foreground: Annotated[bool, typer.Option(
        "--foreground", help="Serve in this terminal until Ctrl-C.")] = False,
) -> None:
    """Install Superset if missing, set it up, import the dashboards and serve them
    (in the background unless --foreground). A second run reuses everything."""
    with _errors():
        dashboards.serve(command_settings(), port, background=not foreground)


@app.command()
def stop() -> None:
    """Stop this home's Superset."""
    stopped = dashboards.stop(get_settings())
    console.print("stopped Superset" if stopped else "Superset was not running")


@app.command()
def status() -> None:
    """Show whether this home's Superset runs; exit 1 when it does not."""
    url = dashboards.status(get_settings())
    if url is None:
        console.print("Superset: [red]down[/]")
        raise typer.Exit(1)
    console.print(f"Superset: [green]up[/] at {url}")


@app.command()
def install() -> None:
    """Install Superset into its virtualenv (what `serve` does first; `make superset-venv`)."""
    with _errors():
        paths = superset.SupersetPaths.of(get_settings())
        done = superset.install(paths)
    console.print(f"Superset {superset.SUPERSET_VERSION} in {paths.venv}"
                  f"{'' if done else ' (already installed)'}")
