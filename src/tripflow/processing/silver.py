"""Silver: parsed, normalised, exactly deduplicated clicks, rebuilt per date from bronze.

For each date, silver is a pure function of that date's bronze rows: the one parser
(`records.parser.parse_batch`, with each row's Kafka timestamp as its read time), then the
first record per dedup key in (Kafka partition, offset) order. A run replaces its dates in
`silver/clicks` with a Delta predicate overwrite: one atomic commit per group of dates, so
a reader (or a kill) sees each date either as it was or as rebuilt, never half.

Bad records are stored in `tripflow.quarantine` (idempotent by Kafka position and bytes), so
rebuilding a date never adds a second row. Bronze rows without a date (`event_date` null)
belong to no date: every run quarantines those in the bronze files added since the bronze
version the last run read, and stores that version in the same transaction (step
'silver-undated'), so they are handled once.

Groups of dates are rebuilt in parallel by threads (two by default) when there are several
(each group: read its bronze files, parse, store its quarantine rows, one predicate
overwrite; groups are disjoint partitions, so their commits do not conflict).

`--changed` rebuilds the dates whose bronze files changed since the bronze version the last
`--changed` run read (`tripflow.batch_state`, step 'silver'); that version is stored only
once every date is rebuilt, so a killed run redoes the same dates next time.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from tripflow import db, lake
from tripflow.db import sqlfiles
from tripflow.memory import BATCH_MMAP_THRESHOLD, bound_process_memory
from tripflow.processing import quarantine
from tripflow.processing.runlog import add_timings, logged_run, tick
from tripflow.records.parser import ParseResult, parse_batch, release_memory
from tripflow.records.schema import CLICK_SCHEMA
from tripflow.settings import Settings

SILVER_SCHEMA = pa.schema(
    [
        *CLICK_SCHEMA,
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)

# Bronze columns silver reads.
_BRONZE_COLUMNS = ["topic", "partition", "offset", "kafka_timestamp", "value", "ingested_at",
                   "event_date"]
# Dates are rebuilt in groups of about this many bronze rows: one parse and one Delta
# commit per group keeps a multi-year backfill to a few dozen commits with bounded memory.
# Measured at full scale (5.37 M rows, two threads, pyarrow on jemalloc): 100 k rows a
# group peaked at 1.23 GB in 42.5 s, 75 k at 1.06 GB in 45.4 s, 50 k at 0.99 GB in 51.5 s
# (two worker processes with 150 k: 2.57 GB in 49.5 s). With glibc's malloc for Arrow
# (tripflow.memory), 100 k rows a group peaked at 870–1,020 MiB (spread over 8 runs: over
# 1 GB at times), 80 k at 804–812 MiB for 1–2 % more time.
_SQL = sqlfiles.queries("processing", "silver.sql")
CHUNK_ROWS = 80_000
STATE_STEP = "silver"
UNDATED_STEP = "silver-undated"


@dataclass
class SilverBuild:
    """Silver rows and quarantined records built from some bronze rows."""

    clicks: pa.Table  # SILVER_SCHEMA
    quarantine: pa.Table  # parser quarantine columns + topic/partition/offset
    rows_in: int
    duplicates: int
    misplaced: int  # valid clicks whose date differs from their bronze partition (expect 0)
    nul_removed: int = 0  # valid records that had U+0000 removed from a string field


def parse_bronze(rows: pa.Table) -> ParseResult:
    """The one parser over bronze rows, each read at its Kafka timestamp: clicks and bad
    records, with topic/partition/offset and the row's bronze date (`bronze_date`) as
    context. Both engines call it (the Spark engine on each Arrow batch)."""
    context = pa.table({
        "topic": rows.column("topic"),
        "partition": rows.column("partition"),
        "offset": rows.column("offset"),
        "bronze_date": rows.column("event_date"),
    })
    return parse_batch(rows.column("value"), context=context, read_ms=lake.read_times(rows))


def build_silver(rows: pa.Table) -> SilverBuild:
    """Parse bronze rows and keep the first record per dedup key by (partition, offset).

    Pure: the same bronze rows always give the same result."""
    result = parse_bronze(rows)
    clicks = result.clicks
    # Bronze dates every valid click by the parser itself, so this holds by construction;
    # a click that nevertheless lands in the wrong partition is counted, not written there.
    placed = pc.fill_null(pc.equal(clicks.column("event_date"), clicks.column("bronze_date")),
                          False)
    misplaced = clicks.num_rows - pc.sum(placed.cast(pa.int64())).as_py() if clicks.num_rows else 0
    if misplaced:
        clicks = clicks.filter(placed)
    parsed = clicks.num_rows
    if parsed:
        # Index arithmetic on narrow columns, then one `take` of the wide table: the first
        # row per dedup key in (partition, offset) order, laid out by event time.
        position = clicks.select(["partition", "offset"])
        by_position = pc.sort_indices(position, [("partition", "ascending"),
                                                 ("offset", "ascending")])
        ranked = pa.table({"dedup_key": clicks.column("dedup_key").take(by_position),
                           "rank": pa.array(np.arange(parsed, dtype=np.int64))})
        firsts = ranked.group_by("dedup_key", use_threads=False).aggregate([("rank", "min")])
        kept = by_position.take(firsts.column("rank_min"))
        layout = clicks.select(["event_date", "event_ts", "partition", "offset"]).take(kept)
        clicks = clicks.take(kept.take(pc.sort_indices(
            layout, [("event_date", "ascending"), ("event_ts", "ascending"),
                     ("partition", "ascending"), ("offset", "ascending")])))
    columns = [clicks.column(name) for name in CLICK_SCHEMA.names]
    columns += [clicks.column("partition"), clicks.column("offset")]
    silver = pa.Table.from_arrays(columns, schema=SILVER_SCHEMA)
    bad = result.quarantine.drop_columns(["bronze_date"])
    return SilverBuild(silver, bad, rows.num_rows, parsed - silver.num_rows, misplaced,
                       result.nul_removed)


ENGINES = ("duckdb", "spark")


def check_engine(name: str) -> str:
    """A batch engine's name, or a ValueError saying which there are."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)} "
                         "(--engine or TRIPFLOW_ENGINE)")
    return name


@dataclass
class SilverSummary:
    """What one `run_silver` did."""

    dates: list[dt.date] = field(default_factory=list)
    rows_in: int = 0  # bronze rows read (dated and undated)
    clicks: int = 0  # silver rows written (distinct clicks)
    duplicates: int = 0
    quarantined: int = 0  # bad records met (dated rows of these dates + undated rows)
    quarantined_new: int = 0  # of which not in the quarantine table before
    undated: int = 0  # undated bronze rows handled by this run
    misplaced: int = 0
    nul_removed: int = 0  # records that had U+0000 removed from a string field
    commits: int = 0
    bronze_version: int | None = None
    seconds: float = 0.0
    engine: str = "duckdb"
    # Seconds per phase: undated (the undated pass), then summed over the groups of dates:
    # read (bronze files), parse (parse and dedup), quarantine (stored), write (Delta).
    # With two threads the sums exceed the wall time. The run log keeps them.
    timings: dict[str, float] = field(default_factory=dict)

    def date_range(self) -> str | None:
        return _date_range(self.dates)

    def line(self) -> str:
        dates = self.date_range() or "no dates"
        engine = "" if self.engine == "duckdb" else f" ({self.engine})"
        return (
            f"silver{engine}: {len(self.dates)} dates ({dates}), {self.rows_in:,} bronze rows in, "
            f"{self.clicks:,} clicks out, {self.duplicates:,} duplicates, "
            f"{self.quarantined:,} quarantined ({self.quarantined_new:,} new, "
            f"{self.undated:,} undated), "
            + (f"U+0000 removed from {self.nul_removed:,}, " if self.nul_removed else "")
            + f"{self.seconds:.1f} s"
            + (f", {self.misplaced} MISPLACED" if self.misplaced else "")
        )


def _date_range(dates: list[dt.date]) -> str | None:
    if not dates:
        return None
    first, last = min(dates), max(dates)
    return str(first) if first == last else f"{first}..{last}"


def read_state(conn: psycopg.Connection, step: str, table: DeltaTable) -> int | None:
    """The version of `table` the last incremental `step` read; None when it never read
    this table (a lake table recreated under the same path has a new id)."""
    row = conn.execute(_SQL["read_state"], (step,)).fetchone()
    if row is None or row[0] != table.metadata().id:
        return None
    return int(row[1])


def write_state(conn: psycopg.Connection, step: str, table: DeltaTable) -> None:
    conn.execute(_SQL["write_state"], (step, table.metadata().id, table.version()))


def forget_state(conn: psycopg.Connection, step: str) -> None:
    """The next incremental `step` rebuilds every date: its output table is gone (deleted
    to rebuild it). Done at the start of every run, explicit dates or not, so that neither
    a kill nor a run that recreates the table can make that forgotten."""
    conn.execute(_SQL["forget_state"], (step,))


def _chunks(dates: list[dt.date], rows: dict[dt.date | None, int],
            chunk_rows: int) -> Iterator[list[dt.date]]:
    """Consecutive groups of dates holding about `chunk_rows` bronze rows each."""
    group: list[dt.date] = []
    size = 0
    for day in dates:
        if group and size + rows.get(day, 0) > chunk_rows:
            yield group
            group, size = [], 0
        group.append(day)
        size += rows.get(day, 0)
    if group:
        yield group


def _undated_pass(conn: psycopg.Connection, bronze: DeltaTable, uri: str,
                  options: dict[str, str] | None, summary: SilverSummary) -> None:
    """Quarantine the undated bronze rows no earlier run handled: those of the files bronze
    added since the version the last pass read, which is stored in the same transaction.
    (By bronze version, not by Kafka offset: a broker whose log was replaced hands out the
    same offsets again, for other records.)"""
    since = read_state(conn, UNDATED_STEP, bronze)
    files = lake.files_added(bronze, uri, since, [None], options)
    rows = lake.read_files(files).to_table(columns=_BRONZE_COLUMNS)
    bad = None
    if rows.num_rows:
        built = build_silver(rows)
        # No click can come out of an undated row (bronze dates every valid click): should
        # the parser ever disagree, the click is counted as misplaced, not written anywhere.
        summary.misplaced += built.misplaced
        bad = built.quarantine
    with conn.transaction():
        if bad is not None:
            summary.quarantined_new += quarantine.store(conn, bad)
            summary.quarantined += bad.num_rows
        write_state(conn, UNDATED_STEP, bronze)
    summary.rows_in += rows.num_rows
    summary.undated += rows.num_rows


def run_silver(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    changed: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    threads: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    engine: str | None = None,
) -> SilverSummary:
    """Rebuild silver for `dates`, or (`changed=True`, the default without dates) for the
    dates bronze appended to since the last `changed` run. Safe to kill at any instant.

    engine: `duckdb` (here, groups in `threads` threads) or `spark` (tripflow.spark.silver);
    default TRIPFLOW_ENGINE."""
    if dates is not None and changed:
        raise ValueError("give dates or changed=True, not both")
    engine = check_engine(engine or settings.engine)
    explicit = sorted(set(dates)) if dates is not None else None
    dsn = db.prepare(settings)
    bound_process_memory(BATCH_MMAP_THRESHOLD)
    summary = SilverSummary(engine=engine)
    started = time.monotonic()
    with logged_run(dsn, "silver", _date_range(explicit or [])) as stats:
        try:
            _run(settings, dsn, explicit, summary, chunk_rows, threads, on_progress, engine)
        finally:
            summary.seconds = time.monotonic() - started
            stats.dates = summary.date_range()
            stats.rows_in, stats.rows_out = summary.rows_in, summary.clicks
            stats.duplicates, stats.quarantined = summary.duplicates, summary.quarantined
            stats.detail = (
                f"{summary.quarantined_new} new quarantine rows, {summary.undated} undated "
                f"bronze rows handled, {summary.commits} commits, bronze version "
                f"{summary.bronze_version}"
                + (f", U+0000 removed from {summary.nul_removed} records"
                   if summary.nul_removed else "")
                + (f", {summary.misplaced} MISPLACED clicks" if summary.misplaced else "")
                + f"; timings {summary.timings}")
    return summary


def _run(settings: Settings, dsn: str, explicit: list[dt.date] | None, summary: SilverSummary,
         chunk_rows: int, threads: int, on_progress: Callable[[int, int], None] | None,
         engine: str = "duckdb") -> None:
    bronze = lake.open_table(settings, lake.BRONZE)
    if bronze is None:
        return  # nothing ingested yet: nothing to rebuild
    summary.bronze_version = bronze.version()
    options = lake.storage_options(settings)
    bronze_uri = lake.table_uri(settings, lake.BRONZE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        _undated_pass(conn, bronze, bronze_uri, options, summary)
        tick(summary.timings, "undated", started)
        if not lake.exists(settings, lake.SILVER):
            forget_state(conn, STATE_STEP)
        if explicit is None:
            since = read_state(conn, STATE_STEP, bronze)
            touched = lake.changed_dates(bronze, since, options)
            todo = sorted(day for day in touched if day is not None)
        else:
            todo = explicit
        summary.dates = todo
        rows_per_date = lake.rows_per_date(bronze)
        groups = list(_chunks(todo, rows_per_date, chunk_rows))
        silver_uri = lake.table_uri(settings, lake.SILVER)
        if groups and (len(groups) > 1 or engine == "spark") and (
                not lake.exists(settings, lake.SILVER)):
            # Created once here: parallel first writes would race to create version 0; and
            # by delta-rs for Spark too, so the table's schema and protocol never depend on
            # the engine that wrote first.
            write_deltalake(silver_uri, SILVER_SCHEMA.empty_table(), mode="append",
                            partition_by=["event_date"], configuration=lake.TABLE_CONFIGURATION,
                            storage_options=options)
        requests = [_GroupRequest(lake.file_set(bronze, bronze_uri, group), silver_uri,
                                  options, dsn,
                                  lake.date_predicate(group)) for group in groups]
        done = 0
        if on_progress:
            on_progress(0, len(todo))
        spark = None
        if engine == "spark" and groups:  # no dates to rebuild: no Spark to start
            from tripflow.spark.silver import group_rebuilder
            spark = group_rebuilder(settings, bronze_uri, bronze.version())
        with _rebuilder(threads, len(groups), spark) as rebuild:
            for group, result in zip(groups, rebuild(requests), strict=True):
                summary.commits += 1
                summary.rows_in += result.rows_in
                summary.clicks += result.clicks
                summary.duplicates += result.duplicates
                summary.quarantined += result.quarantined
                summary.quarantined_new += result.quarantined_new
                summary.misplaced += result.misplaced
                summary.nul_removed += result.nul_removed
                add_timings(summary.timings, result.timings)
                done += len(group)
                if on_progress:
                    on_progress(done, len(todo))
        if explicit is None:
            write_state(conn, STATE_STEP, bronze)


# -- rebuilding groups of dates, here or in threads ----------------------------------------
@dataclass(frozen=True)
class _GroupRequest:
    """Everything needed to rebuild one group of dates (no open handles)."""

    bronze_files: lake.FileSet
    silver_uri: str
    options: dict[str, str] | None
    dsn: str
    predicate: str


@dataclass(frozen=True)
class _GroupResult:
    rows_in: int
    clicks: int
    duplicates: int
    quarantined: int
    quarantined_new: int
    misplaced: int
    nul_removed: int
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds


def _rebuild_group(request: _GroupRequest) -> _GroupResult:
    """Rebuild one group of dates: its bad records to the quarantine (idempotent), then
    its silver rows in one Delta predicate overwrite (atomic). Groups are disjoint sets of
    partitions, so concurrent rebuilds commit without conflicting."""
    timings: dict[str, float] = {}
    mark = time.monotonic()
    rows = lake.read_files(request.bronze_files).to_table(columns=_BRONZE_COLUMNS,
                                                          use_threads=False)
    mark = tick(timings, "read", mark)
    built = build_silver(rows)
    # DuckDB's allocator keeps the parse's freed pages for about a second: handed back
    # now, before the Delta write allocates its own (silver's peak).
    del rows
    release_memory()
    mark = tick(timings, "parse", mark)
    with psycopg.connect(request.dsn, autocommit=True) as conn, conn.transaction():
        new = quarantine.store(conn, built.quarantine)
    mark = tick(timings, "quarantine", mark)
    write_deltalake(request.silver_uri, built.clicks, mode="overwrite",
                    predicate=request.predicate, partition_by=["event_date"],
                    configuration=lake.TABLE_CONFIGURATION, storage_options=request.options)
    tick(timings, "write", mark)
    return _GroupResult(built.rows_in, built.clicks.num_rows, built.duplicates,
                        built.quarantine.num_rows, new, built.misplaced, built.nul_removed,
                        timings)


@contextmanager
def _rebuilder(threads: int, groups: int,
               spark: Callable[[_GroupRequest], _GroupResult] | None = None
               ) -> Iterator[Callable[[list[_GroupRequest]], Iterator[_GroupResult]]]:
    """A function from group requests to their results, in order. With several groups,
    threads rebuild them in parallel: DuckDB's parse, Arrow's kernels and the Delta write
    all run without the GIL, so two threads do as much as two processes did, on one copy of
    the libraries and their allocators (measured at full scale: 6 % faster, 8 % less CPU,
    half the memory). A kill ends them with the process; a failed group ends the run with
    its error. A single group is rebuilt right here.

    With the Spark engine, Spark rebuilds each group (its executors are the parallelism)."""
    if spark is not None:
        yield lambda requests: map(spark, requests)
        return
    if threads <= 1 or groups <= 1:
        yield lambda requests: map(_rebuild_group, requests)
        return
    pool = ThreadPoolExecutor(max_workers=min(threads, groups), thread_name_prefix="silver")
    try:
        yield lambda requests: pool.map(_rebuild_group, requests)
    finally:
        # After a failure, the groups not started yet are dropped, not rebuilt in vain.
        pool.shutdown(wait=True, cancel_futures=True)
