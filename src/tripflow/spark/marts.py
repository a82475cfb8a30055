"""The cold marts on Spark: the same SQL files as DuckDB, transpiled at run time.

Each `marts/sql/*.sql` file is written for DuckDB; sqlglot turns it into Spark SQL when it
runs (`spark_sql`), so there is one definition of every mart. The relations the files read
(`sql/README.md`) are Spark views over the lake's own Delta tables: `silver_clicks` and
`silver_click_areas` over `silver/clicks` restricted to the group's dates, `articles` over
`reference/articles`. Results are written to `gold/<mart>` by Spark (`replaceWhere` on the
group's dates, one commit per mart) and collected as Arrow for the PostgreSQL load, which
is the DuckDB engine's (`marts/load.py`: every date of the run in one transaction).

The reconciliation's input (the recent dates' minutes) arrives as Arrow relations
(`run`): Spark takes them with `createDataFrame` and runs the same file.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlglot

from tripflow import lake
from tripflow.marts import engine as engines
from tripflow.settings import Settings
from tripflow.spark.session import session, spark_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@functools.cache
def spark_sql(name: str) -> str:
    """The mart SQL file `name`, DuckDB dialect, as Spark SQL."""
    return sqlglot.transpile(engines.sql_text(name), read="duckdb", write="spark")[0]


def _ordered(text: str, keys: list[str] | None) -> str:
    if not keys:
        return text
    return f"SELECT * FROM (\n{text}\n) AS result ORDER BY {', '.join(keys)}"


class SparkEngine:
    """Runs the SQL files on Spark (TRIPFLOW_SPARK_MASTER) over the lake's Delta tables."""

    name = "spark"
    writes_gold = True  # run_marts leaves gold to the engine

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spark: SparkSession = session(settings)

    def _collect(self, query: str, keys: list[str] | None) -> pa.Table:
        return engines.normalise(self.spark.sql(_ordered(spark_sql(query), keys)).toArrow())

    def run(self, rel: engines.Relations, queries: list[str],
            order_by: dict[str, list[str]] | None = None) -> dict[str, pa.Table]:
        """Each query's result over Arrow relations (as DuckDBEngine.run)."""
        for name, table in rel.as_dict().items():
            self.spark.createDataFrame(table).createOrReplaceTempView(name)
        return {query: self._collect(query, (order_by or {}).get(query)) for query in queries}

    def register_lake(self, dates: list[dt.date], with_articles: bool) -> int:
        """The relations of `dates` as views over the lake's tables; silver rows read."""
        settings = self.settings
        silver = (self.spark.read.format("delta")
                  .load(spark_path(lake.table_uri(settings, lake.SILVER)))
                  .where(lake.date_predicate(dates)))
        silver.selectExpr(
            "event_date", "event_ts", "unix_millis(event_ts) AS event_ms", "session_id",
            "document_id", "title", "kafka_partition", "kafka_offset",
        ).createOrReplaceTempView("silver_clicks")
        silver.selectExpr("event_date", "session_id", "explode(clinical_areas) AS clinical_area"
                          ).createOrReplaceTempView("silver_click_areas")
        if with_articles:
            articles = (self.spark.read.format("delta")
                        .load(spark_path(lake.table_uri(settings, lake.ARTICLES)))
                        .select("document_id", "title"))
        else:
            articles = self.spark.createDataFrame(engines.EMPTY_ARTICLES)
        articles.createOrReplaceTempView("articles")
        return silver.count()

    def run_dates(self, dates: list[dt.date], marts: list[str],
                  order_by: dict[str, list[str]], with_articles: bool
                  ) -> tuple[int, dict[str, pa.Table]]:
        """Every mart of `dates` from the lake: written to gold by Spark (one replaceWhere
        commit per mart) and returned as Arrow. Returns (silver rows read, results)."""
        rows_in = self.register_lake(dates, with_articles)
        predicate = lake.date_predicate(dates)
        results = {}
        for mart in marts:
            results[mart] = self._collect(mart, order_by.get(mart))
            # The collected rows go to gold, so gold and PostgreSQL hold the same rows
            # (no second evaluation of the SQL).
            (self.spark.createDataFrame(results[mart]).write.format("delta")
             .mode("overwrite").option("replaceWhere", predicate)
             .save(spark_path(lake.table_uri(self.settings, lake.gold(mart)))))
        return rows_in, results
