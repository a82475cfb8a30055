"""Silver on Spark: the same rebuild as `processing/silver.py`, with Spark doing the work.

Per group of dates: Spark reads the group's bronze partitions from the bronze Delta table
(at the version the run planned from), runs the one parser (`processing.silver.
parse_bronze`, i.e. `records.parser.parse_batch`) on every Arrow batch with `mapInArrow`,
keeps the first record per dedup key by (Kafka partition, offset) across the group's
dates — exactly the DuckDB engine's rule — and replaces the group's dates in
`silver/clicks` in one Delta commit (`replaceWhere` on `event_date`). Bad records are
collected as Arrow and stored in `tripflow.quarantine` by the same code as the DuckDB
engine's, before the commit (as there).

The parser's output goes through Spark as one tagged row stream (`kind`: a click, a bad
record, or a batch's counts), so each batch is parsed once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg
import pyarrow as pa

from tripflow.processing import quarantine
from tripflow.processing.silver import (
    _BRONZE_COLUMNS,
    SILVER_SCHEMA,
    _GroupRequest,
    _GroupResult,
    parse_bronze,
)
from tripflow.settings import Settings
from tripflow.spark.session import session, spark_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CLICK, BAD, COUNTS = "click", "bad", "counts"

# One row of the parser's output: a silver click, a bad record or a batch's counts.
PARSED_SCHEMA = pa.schema([
    pa.field("kind", pa.string()),
    *(field.with_nullable(True) for field in SILVER_SCHEMA),
    pa.field("bronze_date", pa.date32()),
    pa.field("topic", pa.string()),
    pa.field("raw", pa.binary()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("bronze_rows", pa.int64()),
    pa.field("nul_removed", pa.int64()),
])
# The parser's context columns under their silver names.
_RENAMED = {"kafka_partition": "partition", "kafka_offset": "offset"}
# Silver's layout within a date, as the DuckDB engine writes it.
_LAYOUT = ["event_date", "event_ts", "kafka_partition", "kafka_offset"]


@functools.cache
def _spark_types() -> tuple[object, pa.Schema]:
    """PARSED_SCHEMA as a Spark schema, and the exact Arrow schema Spark expects back."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    struct = from_arrow_schema(PARSED_SCHEMA)
    return struct, to_arrow_schema(struct)


def _tagged(kind: str, table: pa.Table, target: pa.Schema) -> pa.RecordBatch:
    columns = []
    for field in target:
        source = _RENAMED.get(field.name, field.name)
        if field.name == "kind":
            columns.append(pa.array([kind] * table.num_rows, pa.string()))
        elif source in table.column_names:
            columns.append(table.column(source).combine_chunks().cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=target)


def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function (runs in Spark's Python workers): bronze batches in, the
    parser's clicks, bad records and counts out, tagged by `kind`."""
    target = _spark_types()[1]
    for batch in batches:
        result = parse_bronze(pa.Table.from_batches([batch]))
        if result.clicks.num_rows:
            yield _tagged(CLICK, result.clicks, target)
        if result.quarantine.num_rows:
            yield _tagged(BAD, result.quarantine, target)
        yield _tagged(COUNTS, pa.table({"bronze_rows": [batch.num_rows],
                                        "nul_removed": [result.nul_removed]}), target)


def parse(bronze: DataFrame) -> DataFrame:
    """Bronze rows (the silver step's columns) → the parser's tagged output."""
    return bronze.select(*_BRONZE_COLUMNS).mapInArrow(parse_batches, _spark_types()[0])


def first_per_key(clicks: DataFrame) -> DataFrame:
    """The first click of each dedup key by (Kafka partition, offset): silver's rule."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy("dedup_key").orderBy("kafka_partition", "kafka_offset")
    return (clicks.withColumn("_rank", F.row_number().over(first))
            .where("_rank = 1").select(*SILVER_SCHEMA.names))


def _rebuild_group(spark: SparkSession, bronze_path: str, bronze_version: int,
                   request: _GroupRequest) -> _GroupResult:
    """Rebuild one group of dates: bad records to the quarantine, then the group's silver
    rows in one replaceWhere commit."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    bronze = (spark.read.format("delta").option("versionAsOf", bronze_version)
              .load(bronze_path).where(request.predicate))
    parsed = parse(bronze).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        is_click = F.col("kind") == CLICK
        placed = is_click & (F.col("event_date") == F.col("bronze_date"))
        counts = parsed.agg(
            F.sum("bronze_rows").alias("rows_in"), F.sum("nul_removed").alias("nul_removed"),
            F.count(F.when(is_click, 1)).alias("clicks"),
            F.count(F.when(placed, 1)).alias("placed"),
            # silver keeps one row per distinct key: its row count without a second pass
            F.count_distinct(F.when(placed, F.col("dedup_key"))).alias("kept")).first()
        bad = (parsed.where(F.col("kind") == BAD)
               .selectExpr("raw", "reason", "detail", "topic", "kafka_partition AS partition",
                           "kafka_offset AS offset").toArrow())
        with psycopg.connect(request.dsn, autocommit=True) as conn, conn.transaction():
            new = quarantine.store(conn, bad)
        (first_per_key(parsed.where(placed)).repartition("event_date").sortWithinPartitions(*_LAYOUT)
         .write.format("delta").mode("overwrite").option("replaceWhere", request.predicate)
         .save(spark_path(request.silver_uri)))
    finally:
        parsed.unpersist()
    rows_in, clicks, in_place, written = (int(counts[name] or 0) for name in (
        "rows_in", "clicks", "placed", "kept"))
    return _GroupResult(rows_in, written, in_place - written, bad.num_rows, new,
                        clicks - in_place, int(counts["nul_removed"] or 0))


def group_rebuilder(settings: Settings, bronze_uri: str, bronze_version: int
                    ) -> Callable[[_GroupRequest], _GroupResult]:
    """What `run_silver` calls for each group of dates with engine spark."""
    return functools.partial(_rebuild_group, session(settings), spark_path(bronze_uri),
                             bronze_version)
