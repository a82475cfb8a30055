"""Running the cold-mart SQL files over silver.

Every `sql/mart_*.sql` file is one cold mart (the file name is the table name, in the lake
and in PostgreSQL); `sql/reconcile_traffic_minute.sql` recomputes the hot traffic-minute
mart. The SQL only names relations (`silver_clicks`, `silver_click_areas`, `articles`,
see `sql/README.md`); an engine registers them for the run's dates and runs the files.
Here the engine is DuckDB over Arrow tables; the same files run on Spark
(tripflow.spark.marts, transpiled to Spark SQL with sqlglot).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tripflow import duck
from tripflow.db import sqlfiles
from tripflow.settings import Settings

RECONCILE_QUERY = "reconcile_traffic_minute"

# The silver columns the marts read.
SILVER_COLUMNS = ["event_date", "event_ts", "session_id", "document_id", "title",
                  "clinical_areas", "kafka_partition", "kafka_offset"]

_UTC_MS = pa.timestamp("ms", tz="UTC")


@cache
def mart_names() -> tuple[str, ...]:
    """Every cold mart: the `mart_*.sql` files, in name order."""
    return sqlfiles.names("marts/sql", "mart_")


def sql_text(name: str) -> str:
    return sqlfiles.text("marts/sql", f"{name}.sql")


@dataclass(frozen=True)
class Relations:
    """What the SQL files read, as Arrow tables."""

    silver_clicks: pa.Table
    silver_click_areas: pa.Table
    articles: pa.Table

    def as_dict(self) -> dict[str, pa.Table]:
        return {"silver_clicks": self.silver_clicks,
                "silver_click_areas": self.silver_click_areas,
                "articles": self.articles}


EMPTY_ARTICLES = pa.table({"document_id": pa.array([], pa.int64()),
                           "title": pa.array([], pa.string())})


def relations(silver: pa.Table, articles: pa.Table | None) -> Relations:
    """The relations of `sql/README.md` from silver rows (SILVER_COLUMNS) and articles."""
    event_ts = silver.column("event_ts").cast(_UTC_MS)
    clicks = pa.table({
        "event_date": silver.column("event_date"),
        # UTC wall-clock time without a zone: HOUR() and DATE_TRUNC() then mean UTC in
        # every engine, whatever its session time zone.
        "event_ts": event_ts.cast(pa.timestamp("ms")),
        "event_ms": event_ts.cast(pa.int64()),
        "session_id": silver.column("session_id"),
        "document_id": silver.column("document_id"),
        "title": silver.column("title"),
        "kafka_partition": silver.column("kafka_partition"),
        "kafka_offset": silver.column("kafka_offset"),
    })
    areas = silver.column("clinical_areas").combine_chunks() if silver.num_rows else (
        pa.array([], pa.list_(pa.string())))
    parents = pc.list_parent_indices(areas)
    per_click = silver.select(["event_date", "session_id"]).take(parents)
    click_areas = per_click.append_column("clinical_area", pc.list_flatten(areas))
    if articles is None:
        articles = EMPTY_ARTICLES
    return Relations(clicks, click_areas, articles.select(["document_id", "title"]))


class DuckDBEngine:
    """Runs the SQL files in an in-process DuckDB over registered Arrow tables."""

    name = "duckdb"
    writes_gold = False  # run_marts writes the results to gold with delta-rs

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads

    def run(self, rel: Relations, queries: list[str],
            order_by: dict[str, list[str]] | None = None) -> dict[str, pa.Table]:
        """Each query's result; `order_by` sorts a result (the engine's doing, not the
        SQL's): rows in primary-key order make PostgreSQL's index inserts sequential."""
        connection = duck.connect(self.threads)
        try:
            for name, table in rel.as_dict().items():
                connection.register(name, table)
            results = {}
            for query in queries:
                text = sql_text(query)
                keys = (order_by or {}).get(query)
                if keys:
                    text = f"SELECT * FROM (\n{text}\n) AS result ORDER BY {', '.join(keys)}"
                results[query] = normalise(connection.sql(text).to_arrow_table())
            return results
        finally:
            connection.close()


def normalise(table: pa.Table) -> pa.Table:
    """Engine output in tripflow's types: timestamps back to UTC instants (ms)."""
    fields, columns = [], []
    for f, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            column = column.cast(pa.timestamp(f.type.unit, tz="UTC")).cast(_UTC_MS)
            f = pa.field(f.name, _UTC_MS)
        fields.append(f)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


ENGINES = {"duckdb": DuckDBEngine}


def get_engine(name: str, settings: Settings | None = None) -> Any:
    """The engine `name`: DuckDBEngine, or the Spark engine (tripflow.spark.marts, which
    needs the settings for its session and the lake)."""
    if name == "spark":
        if settings is None:
            raise ValueError("the Spark engine needs the settings")
        from tripflow.spark.marts import SparkEngine

        return SparkEngine(settings)
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}: choose one of duckdb, spark "
                         "(--engine or TRIPFLOW_ENGINE)") from None
