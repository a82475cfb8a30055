"""`tripflow jars`: fetch the pinned Java jar sets once (Kafka brokers, Spark's Delta/JDBC)."""

from __future__ import annotations

import typer

from tripflow.services import jars as jar_sets


def jars(
    names: list[str] = typer.Argument(None, help="jar sets (kafka, spark); "
                                      "all when none is named"),
) -> None:
    """Fetch Java jars into the cache (TRIPFLOW_JARS_DIR) so later runs stay offline."""
    try:
        for name in names or jar_sets.JAR_SETS:
            found = jar_sets.ensure(name)
            typer.echo(f"{name}: {len(found)} jars in {jar_sets.folder(name)}")
    except jar_sets.JarsError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from error
