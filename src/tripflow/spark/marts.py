"""The cold marts on Spark: the same SQL files as DuckDB, transpiled at run time.

Each `marts/sql/*.sql` file is written for DuckDB; sqlglot turns it into Spark SQL when it
runs (`spark_sql`), so there is one definition of every mart. The relations the files read
(`sql/README.md`): `silver_clicks` and `silver_click_areas` are Spark views over the lake's
`silver/clicks` restricted to the group's dates; `articles` holds the titles of the group's
documents from the DuckDB engine's own lookup (`marts/articles.py`). Results are collected
as Arrow for the PostgreSQL load, which is the DuckDB engine's (`marts/load.py`: every date
of the run in one transaction), and written to `gold/<mart>` by Spark (`replaceWhere` on
the group's dates, one commit per mart).

The reconciliation's minutes of a group's recent dates come from the same views; pending
dates outside the run arrive as Arrow relations (`run`), which Spark takes with
`createDataFrame`.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlglot

from tripflow import lake
from tripflow.marts import engine as engines
from tripflow.marts.articles import LoadedArticles
from tripflow.settings import Settings
from tripflow.spark.session import session, spark_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@functools.cache
def spark_sql(name: str) -> str:
    """The mart SQL file `name`, DuckDB dialect, as Spark SQL."""
    return sqlglot.transpile(engines.sql_text(name), read="duckdb", write="spark")[0]


class SparkEngine:
    """Runs the SQL files on Spark (TRIPFLOW_SPARK_MASTER) over the lake's Delta tables."""

    name = "spark"
    writes_gold = True  # run_marts leaves gold to the engine

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cached: list[DataFrame] = []

    @property
    def spark(self) -> SparkSession:
        """Started on first use: a run with nothing to do starts no Spark."""
        return session(self.settings)

    def _collect(self, query: str, keys: list[str] | None) -> pa.Table:
        """The query's rows as Arrow, in `keys` order: sorted here, as a global ORDER BY
        in Spark costs a sampling job more, and only the PostgreSQL load wants the order."""
        table = engines.normalise(self.spark.sql(spark_sql(query)).toArrow())
        # Nullable like DuckDB's results, whatever Spark inferred: one schema per query.
        table = table.cast(pa.schema([field.with_nullable(True) for field in table.schema]))
        return table.sort_by([(key, "ascending") for key in keys]) if keys else table

    def run(self, rel: engines.Relations, queries: list[str],
            order_by: dict[str, list[str]] | None = None) -> dict[str, pa.Table]:
        """Each query's result over Arrow relations (as DuckDBEngine.run)."""
        for name, table in rel.as_dict().items():
            self.spark.createDataFrame(table).createOrReplaceTempView(name)
        return {query: self._collect(query, (order_by or {}).get(query)) for query in queries}

    def register_lake(self, dates: list[dt.date], titles: LoadedArticles) -> int:
        """The relations of `dates`: views over silver, and the titles of the dates'
        documents from the same lookup as the DuckDB engine's (`LoadedArticles`: the
        catalogue with the current dimension's titles). Returns the silver rows read."""
        from pyspark import StorageLevel

        settings = self.settings
        silver = (self.spark.read.format("delta")
                  .load(spark_path(lake.table_uri(settings, lake.SILVER)))
                  .where(lake.date_predicate(dates)))
        # Read once for every mart of the group (released by run_dates).
        clicks = silver.selectExpr(
            "event_date", "event_ts", "unix_millis(event_ts) AS event_ms", "session_id",
            "document_id", "title", "kafka_partition", "kafka_offset",
        ).persist(StorageLevel.MEMORY_AND_DISK)
        clicks.createOrReplaceTempView("silver_clicks")
        areas = silver.selectExpr("event_date", "session_id",
                                  "explode(clinical_areas) AS clinical_area"
                                  ).persist(StorageLevel.MEMORY_AND_DISK)
        areas.createOrReplaceTempView("silver_click_areas")
        self._cached = [clicks, areas]
        found = None
        if titles.loaded:
            documents = silver.select("document_id").distinct().toArrow()
            found = titles.for_documents(documents.column("document_id"))
        self.spark.createDataFrame(found if found is not None else engines.EMPTY_ARTICLES
                                   ).createOrReplaceTempView("articles")
        return clicks.count()

    def run_dates(self, dates: list[dt.date], marts: list[str],
                  order_by: dict[str, list[str]], titles: LoadedArticles,
                  recent: list[dt.date]) -> tuple[int, dict[str, pa.Table], pa.Table | None]:
        """Every mart of `dates` from the lake: written to gold by Spark (one replaceWhere
        commit per mart) and returned as Arrow; and the exact minutes of the `recent` dates
        (the reconciliation's query). Returns (silver rows read, results, minutes)."""
        try:
            rows_in = self.register_lake(dates, titles)
            predicate = lake.date_predicate(dates)
            results = {}
            for mart in marts:
                results[mart] = self._collect(mart, order_by.get(mart))
                # The collected rows go to gold, so gold and PostgreSQL hold the same rows
                # (no second evaluation of the SQL).
                (self.spark.createDataFrame(results[mart]).write.format("delta")
                 .mode("overwrite").option("replaceWhere", predicate)
                 .save(spark_path(lake.table_uri(self.settings, lake.gold(mart)))))
            minutes = None
            if recent:
                self._cached[0].where(lake.date_predicate(recent)).createOrReplaceTempView(
                    "silver_clicks")
                minutes = self._collect(engines.RECONCILE_QUERY, None)
        finally:
            for frame in self._cached:
                frame.unpersist()
            self._cached = []
        return rows_in, results, minutes
