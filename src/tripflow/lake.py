"""The lake: Delta table locations under TRIPFLOW_LAKE_URI and small helpers over them.

The lake root is a local folder or an object-store URI (`s3://bucket/prefix`); URIs are
built as strings, never with pathlib, so `s3://` survives. Object-store credentials and
options come from the environment, which delta-rs reads itself (`AWS_ACCESS_KEY_ID`,
`AWS_REGION`, `AWS_ENDPOINT_URL`, and for safe concurrent commits on S3
`AWS_CONDITIONAL_PUT=etag` or a DynamoDB lock): nothing secret is passed through tripflow.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable

from tripflow.arrow_dataset import pads
from tripflow.settings import Settings

if TYPE_CHECKING:
    import duckdb

BRONZE = "bronze/tripclick_raw_logs"
SILVER = "silver/clicks"
ARTICLES = "reference/articles"

# Properties of every table tripflow creates (delta-rs applies them only on creation).
# A checkpoint every 10 commits, as Spark's Delta does by default (delta-rs: every 100):
# opening a table then reads one checkpoint and at most nine commits, not its whole log.
# Every tripflow command opens bronze and silver several times; at full scale, with
# 60-odd commits each and no checkpoint, an open took 50-100 ms, with one 20-40 ms.
TABLE_CONFIGURATION: dict[str, str | None] = {"delta.checkpointInterval": "10"}


def gold(mart: str) -> str:
    return f"gold/{mart}"


def table_uri(settings: Settings, relative: str) -> str:
    return f"{settings.lake.rstrip('/')}/{relative}"


def storage_options(settings: Settings) -> dict[str, str] | None:
    """Options for delta-rs; None = its defaults plus the AWS_* environment (see above)."""
    return None


def exists(settings: Settings, relative: str) -> bool:
    """Whether the Delta table was ever written (without reading its log, as opening does)."""
    return DeltaTable.is_deltatable(table_uri(settings, relative),
                                    storage_options=storage_options(settings))


def open_table(settings: Settings, relative: str, version: int | None = None) -> DeltaTable | None:
    """The Delta table, or None when it was never written."""
    if not exists(settings, relative):
        return None
    return DeltaTable(table_uri(settings, relative), version=version,
                      storage_options=storage_options(settings))


def bronze_app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id holding a partition's last offset in bronze."""
    return f"tripflow-bronze:{topic}:{partition}"


def read_times(table: pa.Table) -> pa.Array:
    """When each bronze row was read, as the parser's `read_ms`: its Kafka timestamp, else
    (a broker without timestamps) its ingestion time. Silver uses the same, so it stays a
    pure function of bronze."""
    # Delta stores timestamps in microseconds: normalise to ms before taking the integer.
    as_ms = pa.timestamp("ms", tz="UTC")
    kafka = table.column("kafka_timestamp").cast(as_ms).cast(pa.int64())
    ingested = table.column("ingested_at").cast(as_ms, safe=False).cast(pa.int64())
    return pc.coalesce(kafka, ingested).combine_chunks()


def date_literal(day: dt.date) -> str:
    return f"'{day.isoformat()}'"


def date_predicate(dates: Iterable[dt.date], column: str = "event_date") -> str:
    """A Delta predicate selecting exactly these dates (a range when they are contiguous)."""
    days = sorted(set(dates))
    if not days:
        raise ValueError("no dates")
    if (days[-1] - days[0]).days + 1 == len(days) and len(days) > 2:
        return f"{column} >= {date_literal(days[0])} AND {column} <= {date_literal(days[-1])}"
    return f"{column} IN ({', '.join(date_literal(d) for d in days)})"


@dataclass(frozen=True)
class PartitionFile:
    path: str
    event_date: dt.date | None
    rows: int


def partition_files(table: DeltaTable) -> tuple[PartitionFile, ...]:
    """The table's current files with their event_date partition value and row count."""
    # A version of a table never changes: its files are listed once per process (a run
    # asks for them several times: changed dates, rows per date, each group's files, the
    # checks). The last four listed are kept: a silver run lists bronze now and at two
    # earlier versions, then silver; a long-running process keeps no more than four.
    return _listed(table, table.version(), lambda: _list_partition_files(table))


def _listed(table: DeltaTable, version: int,
            list_files: Callable[[], tuple[PartitionFile, ...]]) -> tuple[PartitionFile, ...]:
    """The files of a version of `table` (the same table: same path and id), listed by
    `list_files` the first time only."""
    key = (table.table_uri, table.metadata().id, version)
    with _PARTITION_FILES_LOCK:
        files = _PARTITION_FILES.get(key)
    if files is None:
        files = list_files()
        with _PARTITION_FILES_LOCK:
            if len(_PARTITION_FILES) >= 4:
                _PARTITION_FILES.pop(next(iter(_PARTITION_FILES)))
            _PARTITION_FILES[key] = files
    return files


_PARTITION_FILES: dict[tuple[str, str, int], tuple[PartitionFile, ...]] = {}
_PARTITION_FILES_LOCK = threading.Lock()


def _list_partition_files(table: DeltaTable) -> tuple[PartitionFile, ...]:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return ()
    if "partition.event_date" in actions.column_names:
        dates = actions.column("partition.event_date").to_pylist()
    else:  # a table without date partitions (reference/articles)
        dates = [None] * actions.num_rows
    rows = actions.column("num_records").to_pylist()
    return tuple(
        PartitionFile(path, day, count or 0)
        for path, day, count in zip(actions.column("path").to_pylist(), dates, rows, strict=True)
    )


def rows_per_date(table: DeltaTable) -> dict[dt.date | None, int]:
    counts: dict[dt.date | None, int] = {}
    for file in partition_files(table):
        counts[file.event_date] = counts.get(file.event_date, 0) + file.rows
    return counts


def changed_dates(
    table: DeltaTable, since_version: int | None, options: dict[str, str] | None = None
) -> set[dt.date | None]:
    """Partitions (event_date values, None = the null partition) whose files changed between
    `since_version` and the loaded version of `table`. Files added or removed both count, so
    a date emptied by an overwrite is reported too. With no earlier version (or one whose
    log is gone), every current partition counts."""
    now = {f.path: f.event_date for f in partition_files(table)}
    if since_version == table.version():
        return set()
    earlier = _files_at(table, since_version, options)
    if earlier is None:
        return set(now.values())
    old = {f.path: f.event_date for f in earlier}
    touched = {day for path, day in now.items() if path not in old}
    touched |= {day for path, day in old.items() if path not in now}
    return touched


def _files_at(table: DeltaTable, version: int | None, options: dict[str, str] | None
              ) -> tuple[PartitionFile, ...] | None:
    """The table's files as of an earlier `version`; None when there is no such version
    to compare with (none given, one later than the loaded one, or its log cleaned up)."""
    if version is None or version > table.version():
        return None
    # Listed once per process, without opening that version again: silver's undated pass
    # and its --changed dates usually ask for the same one (≈ 40 ms an open of bronze).
    try:
        return _listed(table, version, lambda: _list_partition_files(
            DeltaTable(table.table_uri, version=version, storage_options=options)))
    except Exception:  # log entries cleaned up
        return None


def _local_root(uri: str) -> str | None:
    """The folder of a local table URI; None for an object store."""
    return uri.removeprefix("file://") if "://" not in uri or uri.startswith("file://") else None


def filesystem_of(uri: str) -> pafs.FileSystem:
    """A pyarrow filesystem rooted at the table (native, so reads run at C speed)."""
    root = _local_root(uri)
    if root is not None:
        return pafs.SubTreeFileSystem(root, pafs.LocalFileSystem())
    filesystem, root = pafs.FileSystem.from_uri(uri)  # s3://…: credentials from AWS_*
    return pafs.SubTreeFileSystem(root, filesystem)


@dataclass(frozen=True)
class FileSet:
    """Some files of a Delta table, enough to read them with pyarrow alone (no delta-rs:
    picklable, usable in a forked worker)."""

    uri: str
    files: tuple[tuple[str, dt.date | None], ...]  # (path in the table, event_date)
    schema: pa.Schema
    partitioned: bool


def file_set(table: DeltaTable, uri: str, dates: Iterable[dt.date | None] | None = None
             ) -> FileSet:
    """The table's current files of the `event_date` partitions `dates` (None in it = the
    null partition; dates=None = every file)."""
    wanted = None if dates is None else set(dates)
    files = tuple((unquote(f.path), f.event_date) for f in partition_files(table)
                  if wanted is None or f.event_date in wanted)
    return FileSet(uri, files, pa.schema(table.schema().to_arrow()),
                   "event_date" in table.metadata().partition_columns)


def files_holding(table: DeltaTable, uri: str, positions: Iterable[tuple[int, int]]
                  ) -> FileSet:
    """The bronze table's files whose statistics say they may hold a row at one of these
    (partition, offset) positions (every file, where statistics are missing)."""
    positions = list(positions)
    actions = pa.table(table.get_add_actions(flatten=True))
    files = file_set(table, uri)
    stats = {f"{m}.{c}" for m in ("min", "max") for c in ("partition", "offset")}
    if not actions.num_rows or not stats <= set(actions.column_names):
        return files
    may_hold = pa.scalar(False)
    for partition, offset in positions:
        here = pc.and_kleene(
            pc.and_kleene(pc.less_equal(actions["min.partition"], partition),
                          pc.greater_equal(actions["max.partition"], partition)),
            pc.and_kleene(pc.less_equal(actions["min.offset"], offset),
                          pc.greater_equal(actions["max.offset"], offset)))
        may_hold = pc.or_kleene(may_hold, here)
    keep = pc.fill_null(may_hold, True).to_pylist()  # no statistics: may hold it
    paths = {unquote(path) for path, k in zip(actions["path"].to_pylist(), keep, strict=True)
             if k}
    return replace(files, files=tuple(f for f in files.files if f[0] in paths))


def read_positions(files: FileSet, topic: str, positions: Iterable[tuple[int, int]],
                   columns: list[str]) -> pa.Table:
    """The rows of `files` (bronze) at these (partition, offset) positions of `topic`."""
    wanted = None
    for partition, offset in positions:
        row = (pc.field("partition") == partition) & (pc.field("offset") == offset)
        wanted = row if wanted is None else wanted | row
    if wanted is None:
        return read_files(files).schema.empty_table().select(columns)
    return read_files(files).to_table(columns=columns,
                                      filter=(pc.field("topic") == topic) & wanted)


def read_files(files: FileSet) -> pads.Dataset:
    """A pyarrow dataset over a FileSet, with `event_date` from the partition values."""
    fmt = pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=True))
    filesystem = filesystem_of(files.uri)
    fragments = []
    for path, day in files.files:
        if not files.partitioned:
            expression = pc.scalar(True)
        elif day is None:
            expression = pc.field("event_date").is_null()
        else:
            expression = pc.field("event_date") == pa.scalar(day, pa.date32())
        fragments.append(fmt.make_fragment(path, filesystem=filesystem,
                                           partition_expression=expression))
    return pads.FileSystemDataset(fragments, files.schema, fmt, filesystem)


_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # the folder of event_date null


def _hive_paths(files: FileSet) -> list[str] | None:
    """The files' local paths when DuckDB can read them itself: a local table whose every
    file sits in its own partition's folder (`event_date=2020-10-29/…`, as delta-rs and
    Spark lay them out), so the folder names give each row the date the Delta log gives
    its file. None otherwise (an object store, another layout, or a path DuckDB would
    take for a glob pattern)."""
    root = _local_root(files.uri)
    if root is None or not files.files or any(c in root for c in "*?[]{}"):
        return None
    if files.partitioned:
        for path, day in files.files:
            folder = path.split("/", 1)[0]
            if folder != f"event_date={_NULL_PARTITION if day is None else day.isoformat()}":
                return None
    return [f"{root.rstrip('/')}/{path}" for path, _ in files.files]


def duckdb_view(connection: duckdb.DuckDBPyConnection, name: str, files: FileSet) -> None:
    """Make `name` in `connection` the rows of `files`, with `event_date` from the
    partition values. Local files are read by DuckDB's own Parquet reader: a table of
    thousands of small files (one per date) scans about twice as fast that way as through
    an Arrow dataset. An object store goes through the Arrow dataset (DuckDB would need its
    httpfs extension, which it cannot download here)."""
    paths = _hive_paths(files)
    if paths is None:
        connection.register(name, read_files(files))
    else:
        # registered, not a view: a view would be shared by every connection of the
        # database (tripflow.duck)
        connection.register(name, _read_parquet(connection, paths, files.partitioned))


def read_columns(files: FileSet, columns: list[str]) -> pa.Table:
    """Some columns of `files` as one Arrow table in file order, typed as in the table's
    schema (one thread: callers run beside other work). Read as `duckdb_view` reads."""
    paths = _hive_paths(files)
    if paths is None:
        return read_files(files).to_table(columns=columns, use_threads=False)
    from tripflow import duck  # here: most commands that use the lake never need DuckDB

    with duck.connect(threads=1) as connection:
        table = _read_parquet(connection, paths, files.partitioned, columns).to_arrow_table()
    return table.cast(pa.schema([files.schema.field(name) for name in columns]))


def _read_parquet(connection: duckdb.DuckDBPyConnection, paths: list[str], partitioned: bool,
                  columns: list[str] | None = None) -> duckdb.DuckDBPyRelation:
    """DuckDB's reader over local files (`_hive_paths`), `event_date` from the folders."""
    selected = ", ".join('"' + c.replace('"', '""') + '"' for c in columns) if columns else "*"
    partitions = ("hive_partitioning = true, hive_types = {'event_date': 'DATE'}"
                  if partitioned else "hive_partitioning = false")
    return connection.sql(f"select {selected} from read_parquet($paths, {partitions})",
                          params={"paths": paths})


def dataset(table: DeltaTable, uri: str,
            dates: Iterable[dt.date | None] | None = None) -> pads.Dataset:
    """A pyarrow dataset of the table's current files, restricted to the `event_date`
    partitions `dates` (None in it = the null partition; dates=None = every file).

    Built from the Delta log's add actions: `DeltaTable.to_pyarrow_dataset()` costs about
    2 ms per file, which for a bronze table of 10⁴ files is seconds on every run."""
    return read_files(file_set(table, uri, dates))


def files_added(table: DeltaTable, uri: str, since_version: int | None,
                dates: Iterable[dt.date | None], options: dict[str, str] | None = None
                ) -> FileSet:
    """The files of the `event_date` partitions `dates` that the loaded version of `table`
    has and `since_version` had not (every one of them when there is no such version, or
    its log is gone). For an append-only table: the rows added since then."""
    files = file_set(table, uri, dates)
    if since_version == table.version():
        return replace(files, files=())
    earlier = _files_at(table, since_version, options)
    if earlier is None:
        return files
    old = {unquote(f.path) for f in earlier}
    return replace(files, files=tuple(f for f in files.files if f[0] not in old))
