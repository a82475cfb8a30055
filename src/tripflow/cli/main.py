"""The `tripflow` command: a thin shell over the stages' public functions.

Commands load lazily: `tripflow --help` lists every command from the table below without
importing any command module, and a run imports only the invoked command's module (and
the libraries it needs). Importing them all (pyarrow, DuckDB, deltalake, psycopg,
confluent-kafka, Superset helpers...) cost ≈0.45 s before every command, which a one-day
incremental run (≤ 1 s) cannot afford.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading
from typing import Any, NamedTuple, NoReturn

import typer
import typer.main
from typer.core import TyperGroup

APP_HELP = "Analytics pipeline for TripClick click logs (Kafka → PostgreSQL marts + Delta Lake)."


class Entry(NamedTuple):
    """Where a command lives and its help's first paragraph (what `tripflow --help`
    lists; tests/cli/test_main.py checks it against the command's own)."""

    module: str
    attribute: str
    help: str
    group: bool = False  # a Typer app of subcommands rather than one function


# In the order of the data flow (commands first, then groups: Typer's order).
COMMANDS: dict[str, Entry] = {
    "migrate": Entry("services", "migrate",
                     "Apply the database migrations (every command does this itself when "
                     "needed)."),
    "jars": Entry("jars", "jars",
                  "Fetch Java jars into the cache (TRIPFLOW_JARS_DIR) so later runs stay "
                  "offline."),
    "generate": Entry("generate", "generate",
                      "Write synthetic TripClick day files, allarticles.txt and manifest.json."),
    "produce": Entry("produce", "produce",
                     "Publish TripClick log lines to the topic, as N web servers would."),
    "stream": Entry("stream", "stream",
                    "Run the hot path: Kafka → hot store → real-time marts, exactly once."),
    "bronze": Entry("batch", "bronze",
                    "Copy the topic into the lake's bronze table, exactly once (safe to kill)."),
    "silver": Entry("batch", "silver",
                    "Rebuild silver (parsed, deduplicated clicks) for dates, from bronze."),
    "marts": Entry("batch", "marts",
                   "Rebuild gold and the PostgreSQL cold marts for dates; reconcile the hot "
                   "minutes."),
    "backfill": Entry("batch", "backfill",
                      "Rebuild silver, then the marts, for every date of a range."),
    "articles": Entry("batch", "articles",
                      "Load the document catalogue; mart_popular_documents takes titles from "
                      "it."),
    "quality": Entry("quality", "quality",
                     "Run the data-quality checks, store them in tripflow.quality_results and "
                     "print them;\nexit 1 when a check of severity `fail` fails."),
    "metrics": Entry("metrics", "metrics",
                     "Serve the pipeline's metrics read from PostgreSQL and the broker at every "
                     "scrape: hot\nmarts' freshness and SLA, records waiting per partition, the "
                     "latest result of every\nquality check, the quarantine per reason (see "
                     "deploy/prometheus/). Runs until stopped."),
    "status": Entry("status", "status", "Per-layer counts and the last run of every step."),
    "demo": Entry("demo", "demo",
                  "Run the whole pipeline on the embedded services and print where to look."),
    "services": Entry("services", "app",
                      "Start, stop and show the embedded PostgreSQL and broker.", group=True),
    "catalog": Entry("cdc", "catalog_app",
                     "The operational document catalogue (catalog.documents).", group=True),
    "cdc": Entry("cdc", "app", "Change data capture of catalog.documents (Debezium).",
                 group=True),
    "dashboards": Entry("dashboards", "app",
                        "Superset dashboards generated from code: build, import, serve.",
                        group=True),
}


def load(name: str) -> typer.models.CommandInfo | typer.Typer:
    """The real command (a function's CommandInfo) or group (a Typer app) of `name`."""
    entry = COMMANDS[name]
    target: Any = getattr(importlib.import_module(f"tripflow.cli.{entry.module}"),
                          entry.attribute)
    if entry.group:
        return target  # type: ignore[no-any-return]
    return typer.models.CommandInfo(name=name, callback=target)


def _click_command(name: str) -> Any:
    real = load(name)
    if isinstance(real, typer.Typer):
        group = typer.main.get_group(real)
        group.name = name
        return group
    return typer.main.get_command_from_info(
        real, pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode)


class LazyGroup(TyperGroup):
    """Lists placeholder commands (name and help only); the command being run is replaced
    by the real one, its module imported, when it is resolved."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in COMMANDS and getattr(command, "lazy_placeholder", False):
            command = self.commands[name] = _click_command(name)
        return name, command, rest


def _placeholder(name: str, entry: Entry) -> typer.models.CommandInfo:
    def placeholder() -> None:  # never runs: resolve_command swaps in the real command
        raise RuntimeError(f"tripflow {name}: command not loaded")

    return typer.models.CommandInfo(name=name, callback=placeholder, help=entry.help,
                                    cls=_PlaceholderCommand)


class _PlaceholderCommand(typer.core.TyperCommand):
    lazy_placeholder = True


app = typer.Typer(
    name="tripflow",
    help=APP_HELP,
    cls=LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.registered_commands.extend(_placeholder(name, entry) for name, entry in COMMANDS.items())


def main() -> NoReturn:
    """The `tripflow` script and `python -m tripflow`: run the command, then `leave`."""
    try:
        app(prog_name="tripflow")
        code: int | str | None = 0
    except SystemExit as done:
        code = done.code
    leave(code)


def leave(code: int | str | None) -> NoReturn:
    """Exit with `code`, skipping the interpreter's teardown when nothing is left to do.

    Tearing down the modules a batch step loads (pyarrow, DuckDB, deltalake, psycopg…) takes
    ≈ 0.2 s after the command is done, a fifth of a one-day incremental step. When no
    other thread of ours is still running, the exit handlers run (logging, multiprocessing,
    every `atexit` hook), the output is flushed, and the process ends at once: files and
    connections are closed by the commands themselves, and the operating system releases
    the rest. Otherwise (or under a profiler or debugger) Python exits as usual."""
    if code is None:
        code = 0
    busy = any(t.is_alive() and not t.daemon for t in threading.enumerate()
               if t is not threading.main_thread())
    if busy or _watched() or not isinstance(code, int):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: started with that descriptor closed
            with contextlib.suppress(OSError, ValueError):  # a closed pipe (`… | head`)
                stream.flush()
    os._exit(code)


def _watched() -> bool:
    """A profiler, coverage or a debugger runs this process: it reports after the command
    returns. (`sys.monitoring`, from Python 3.12, is what cProfile and coverage use there.)"""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(
        monitoring.get_tool(tool) is not None for tool in range(6))
