"""Bronze: copy the topic into the Delta table `bronze/tripclick_raw_logs`, exactly once.

Bronze is a sink (`BronzeSink`) of the one exactly-once consumer loop
(`tripflow.messaging.consumer`), which reads, batches, verifies logs and drives the writes.
Every append is one Delta commit that also records, for each Kafka partition it covers, an
application transaction `tripflow-bronze:<topic>:<partition>` whose version is the last
offset written. That version, not Kafka's committed offset, is where reading resumes: on
start and after every rebalance the consumer seeks each assigned partition to version + 1
(Kafka offsets are committed too, only as a hint for lag monitoring). Right before a write
the versions are read again and rows at or below them are trimmed, so a batch that overlaps
what is already in the table (a retry, a rebalance race) never lands twice. A kill at any
instant leaves either the whole commit or none of it.

A replaced log (the embedded broker forgets everything on restart and hands out the same
offsets again, for other records): on assignment the loop reads back the record at each
partition's last written offset and compares it with the row bronze holds there (by
fingerprint, `stored_positions`). If it differs, or the log now ends before it, bronze
says so and copies the partition from the start of the new log, its old version no longer
trimming anything; the first append records the new log's version. (Silver deduplicates
by click, so records both logs hold count once.)

Each row keeps the record as sent (`value`, unparsed) with its Kafka coordinates and an
`event_date` partition column: the UTC date of `DateCreated`, found by a regex over the raw
bytes (vectorised) and, for the few rows where the regex is not conclusive, by the real
parser (`records.parser.parse_batch`). So every valid click sits in the partition of the
date the parser gives it, which is what silver relies on; rows with no usable date get a
null `event_date` and silver quarantines them once.

"Done" (`until_idle`) means no record arrived for that many seconds: the broker's high
watermark is never trusted (a tansu quirk, harmless elsewhere).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError

from tripflow import db, lake
from tripflow.memory import BATCH_MMAP_THRESHOLD, bound_process_memory
from tripflow.messaging.consumer import ConsumerOptions, ExactlyOnceConsumer, stop_on_signals
from tripflow.messaging.sink import Batch, SinkBase, Stored, Written, fingerprint
from tripflow.processing.runlog import logged_run
from tripflow.records import rules
from tripflow.records.parser import parse_batch
from tripflow.records.rawdates import fixed_shape_event_ms
from tripflow.settings import Settings

log = logging.getLogger("tripflow.bronze")

GROUP_ID = "tripflow-bronze"
# Tries of one batch's commit when other writers' commits conflict with it (`write`).
COMMIT_ATTEMPTS = 5
# Reading back the record at a partition's last written offset: it arrives within
# milliseconds when it exists; after CHECK_TIMEOUT_S the broker is asked where the log ends
# (a log ending before it was replaced), and after CHECK_LIMIT_S the run gives up.
CHECK_TIMEOUT_S = 3.0
CHECK_LIMIT_S = 30.0

BRONZE_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_date", pa.date32()),
    ]
)

# Dates the parser rejects (too_old, in_future) are no partition: see event_dates().
# Fast path: `"DateCreated"` is the object's *first* key (as in every TripClick file), with a
# `/Date(ms)/` value (`/` optionally escaped as `\/`). The parser reads the first occurrence
# of a repeated key, and nothing nested can come before the first key, so when this matches
# the parser finds the same value. 18 digits always fit an int64. Only the head of the
# record is searched: it is where the key is, and it keeps the regex cheap.
_DATE_PATTERN = r"^\s*\[?\s*\{\s*" + rules.DATE_CREATED_KEY + rules.DATE_CREATED_RAW
_HEAD_BYTES = 96

# Parquet: `value` (the raw JSON, ~all of the bytes) with no dictionary (every record
# differs: building one is wasted CPU) and no min/max statistics (nothing prunes on it).
WRITER_PROPERTIES = WriterProperties(
    compression="SNAPPY",
    column_properties={"value": ColumnProperties(dictionary_enabled=False,
                                                 statistics_enabled="NONE")},
)


class BronzeError(RuntimeError):
    """Bronze could not run; the message says what to do."""


def event_dates(values: pa.Array, read_ms: pa.Array) -> pa.Array:
    """The `event_date` partition value of each raw record (date32, null = no usable date).

    `read_ms` is when each record was read (its Kafka timestamp), as the parser takes it.
    Records that start exactly as TripClick writes them are read at fixed byte offsets
    (`rawdates.fixed_shape_event_ms`); the regex then decides when `"DateCreated"` is the
    record's first key with a plain `/Date(ms)/` value; anything else (other key orders,
    escaped keys, odd values, bad records) goes through the real parser, and gets the date
    of its click or null. A date the parser would reject (before 2000, more than a day
    after `read_ms`) is null too, so every dated partition holds only dates a click can
    have.
    """
    # The fast path chunk by chunk (no copy of the raw values); the rest in one slow call
    # (the parser has a fixed cost per call).
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if isinstance(read_ms, pa.ChunkedArray):
        read_ms = read_ms.combine_chunks()
    n = len(values)
    if n == 0:
        return pa.array([], pa.date32())
    found = [fixed_shape_event_ms(chunk) for chunk in chunks if len(chunk)]
    ms = np.concatenate([m for m, _ in found])
    fast = np.concatenate([ok for _, ok in found])
    read = read_ms.to_numpy(zero_copy_only=False)
    # (a null read time is NaN in float: never plausible here, the slow path decides)
    fast &= (ms >= rules.EARLIEST_EVENT_MS) & (ms - rules.FUTURE_TOLERANCE_MS <= read)
    if fast.all():
        return pa.array((ms // rules.ONE_DAY_MS).astype(np.int32), pa.int32()).cast(pa.date32())
    days = np.zeros(n, dtype=np.int32)
    days[fast] = (ms[fast] // rules.ONE_DAY_MS).astype(np.int32)
    known = fast.copy()
    rest = np.flatnonzero(~fast)
    slow = _slow_event_dates(_take_from_chunks(chunks, rest),
                             read_ms.take(pa.array(rest, pa.int64())))
    days[rest] = slow.cast(pa.int32()).fill_null(0).to_numpy()
    known[rest] = slow.is_valid().to_numpy(zero_copy_only=False)
    return pa.array(days, pa.int32(), mask=~known).cast(pa.date32())


def _take_from_chunks(chunks: list[pa.Array], rows: np.ndarray) -> pa.Array:
    """The values at `rows` (ascending) of these chunks read as one array, taken chunk by
    chunk: a ChunkedArray's take() first glues every chunk together, a copy of the whole
    batch's values for the few rows taken here."""
    bounds = np.cumsum([0, *map(len, chunks)])
    starts, ends = bounds[:-1], bounds[1:]
    parts = []
    for chunk, start, low, high in zip(chunks, starts, np.searchsorted(rows, starts),
                                       np.searchsorted(rows, ends), strict=True):
        if high > low:
            parts.append(chunk.take(pa.array(rows[low:high] - start, pa.int64())))
    return pa.concat_arrays(parts) if parts else pa.array([], chunks[0].type)


def _slow_event_dates(values: pa.Array, read_ms: pa.Array) -> pa.Array:
    """event_dates() of records the fast path did not decide: regex, else the parser."""
    head = pc.binary_slice(values, 0, _HEAD_BYTES)
    found = pc.struct_field(pc.extract_regex(head, _DATE_PATTERN), "ms")
    ms = found.cast(pa.string()).cast(pa.int64())
    ok = pc.fill_null(
        pc.and_(pc.greater_equal(ms, rules.EARLIEST_EVENT_MS),
                pc.less_equal(pc.subtract(ms, rules.FUTURE_TOLERANCE_MS), read_ms)),
        False,
    )
    ok_np = ok.to_numpy(zero_copy_only=False)
    days = np.zeros(len(values), dtype=np.int32)
    if ok_np.any():
        days[ok_np] = (pc.filter(ms, ok).to_numpy() // rules.ONE_DAY_MS).astype(np.int32)
    known = ok_np.copy()
    doubtful = np.flatnonzero(~ok_np)
    if doubtful.size:
        rows = pa.array(doubtful, pa.int64())
        result = parse_batch(
            values.take(rows), context=pa.table({"_row": rows}), read_ms=read_ms.take(rows)
        )
        if result.clicks.num_rows:
            at = result.clicks.column("_row").to_numpy()
            days[at] = result.clicks.column("event_date").cast(pa.int32()).to_numpy()
            known[at] = True
    return pa.array(days, pa.int32(), mask=~known).cast(pa.date32())


@dataclass
class BronzeSummary:
    """What one `run_bronze` did."""

    records: int = 0  # consumed from the topic
    written: int = 0  # appended to bronze
    trimmed: int = 0  # consumed but already in bronze (skipped)
    batches: int = 0
    undated: int = 0  # written with a null event_date
    dates: set[dt.date] = field(default_factory=set)
    last_offsets: dict[int, int] = field(default_factory=dict)  # written, per partition
    gaps: list[str] = field(default_factory=list)  # offsets missing from the topic
    replaced: list[str] = field(default_factory=list)  # partitions whose log was replaced
    seconds: float = 0.0
    first_record_at: float | None = None  # monotonic clock
    last_write_at: float | None = None

    @property
    def records_per_s(self) -> float:
        """Throughput from the first record read to the last write (no join, no idle)."""
        if self.first_record_at is None or self.last_write_at is None:
            return 0.0
        busy = self.last_write_at - self.first_record_at
        return self.written / busy if busy > 0 else 0.0

    def date_range(self) -> str | None:
        if not self.dates:
            return None
        return f"{min(self.dates)}..{max(self.dates)}"

    def line(self) -> str:
        return (
            f"bronze: {self.records:,} records read, {self.written:,} written "
            f"({self.trimmed:,} already in bronze, {self.undated:,} without a date) in "
            f"{self.batches} batches, {self.seconds:.1f} s ({self.records_per_s:,.0f} records/s)"
            + (f"; {len(self.replaced)} partition log(s) replaced, copied from their start"
               if self.replaced else "")
        )


class BronzeSink(SinkBase):
    """Bronze as a sink of the exactly-once consumer loop: one Delta append per batch,
    carrying each partition's last written offset as an application transaction.

    Writes run on the loop's writer thread: event dates are extracted, rows already in
    bronze trimmed, and the append made, while the loop reads the next batch.
    """

    holder = "bronze"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.uri = lake.table_uri(settings, lake.BRONZE)
        self.options = lake.storage_options(settings)
        self.table: DeltaTable | None = None
        self.table_lock = threading.Lock()
        self.summary = BronzeSummary()

    # -- Delta state -------------------------------------------------------------------
    def written_versions(self, partitions: list[int]) -> dict[int, int | None]:
        """Last offset in bronze per partition (None = nothing yet), read from Delta now."""
        with self.table_lock:
            if self.table is None:
                self.table = lake.open_table(self.settings, lake.BRONZE)
            else:
                self.table.update_incremental()
            if self.table is None:
                return dict.fromkeys(partitions)
            return {p: self.table.transaction_version(lake.bronze_app_id(self.topic, p))
                    for p in partitions}

    def stored_positions(self, partitions: list[int]) -> dict[int, Stored]:
        """Where each partition resumes: after its Delta version, with the fingerprint of
        the row bronze holds there (the loop reads that record back to verify the log)."""
        versions = self.written_versions(partitions)
        last = {p: v for p, v in versions.items() if v is not None}
        rows = self._stored_records(last)
        return {p: Stored(None) if v is None else Stored(
                    v + 1, fingerprint(*rows[p]) if p in rows else None)
                for p, v in versions.items()}

    def _stored_records(self, last: dict[int, int]
                        ) -> dict[int, tuple[int, bytes | None, bytes | None]]:
        """Bronze's row at each partition's last written offset, as (Kafka timestamp in
        ms, -1 for none; key; value); the latest written one, should a replaced log have
        put two there. Only the files whose statistics can hold it are read."""
        if not last or self.table is None:
            return {}
        with self.table_lock:
            files = lake.files_holding(self.table, self.uri, last.items())
        rows = lake.read_positions(files, self.topic, last.items(),
                                   ["partition", "kafka_timestamp", "key", "value",
                                    "ingested_at"])
        found: dict[int, tuple[int, bytes | None, bytes | None]] = {}
        newest: dict[int, int] = {}
        for p, ms, key, value, at in zip(
                rows["partition"].to_pylist(),
                # (Delta hands timestamps back in microseconds)
                rows["kafka_timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
                .to_pylist(),
                rows["key"].to_pylist(), rows["value"].to_pylist(),
                rows["ingested_at"].cast(pa.int64()).to_pylist(), strict=True):
            if at >= newest.get(p, at):
                newest[p], found[p] = at, (-1 if ms is None else ms, key, value)
        return found

    def log_replaced(self, partition: int, why: str) -> None:
        self.summary.replaced.append(f"partition {partition}: {why}")
        log.warning("partition %d of %s: %s. The broker's log was replaced (an embedded "
                    "broker forgets everything on restart); copying the partition from the "
                    "start of the new log.", partition, self.topic, why)

    # -- writing -------------------------------------------------------------------------
    def write(self, batch: Batch) -> Written:
        # A commit another writer's change made impossible (another loader created the
        # table too, so its first commit lands after ours with the table's metadata; or it
        # wrote the same partition after a rebalance) fails without writing anything. Read
        # the table again and redo the batch: the versions trim what landed meanwhile.
        for attempt in range(1, COMMIT_ATTEMPTS):
            try:
                return self._write(batch)
            except CommitFailedError as err:
                log.info("bronze commit %d of %d conflicted (%s): reading the table again",
                         attempt, COMMIT_ATTEMPTS, err)
                with self.table_lock:
                    self.table = None  # written_versions opens it afresh
        return self._write(batch)  # the last try: its error ends the run

    def _write(self, batch: Batch) -> Written:
        rows = batch.rows
        partitions = rows["partition"].to_numpy()
        offsets = rows["offset"].to_numpy()
        # Trim what is already in bronze (versions re-read right before the write). A
        # partition read from the start of a new log: its old log's version trims nothing.
        versions = self.written_versions(np.unique(partitions).tolist())
        keep = np.ones(len(offsets), dtype=bool)
        for p, last in versions.items():
            stale = p in batch.replaced and batch.expected.get(p) == (
                None if last is None else last + 1)
            if last is not None and not stale:
                keep &= ~((partitions == p) & (offsets <= last))
        kept = int(keep.sum())
        trimmed = len(offsets) - kept
        if kept == 0:
            self.summary.trimmed += trimmed
            return Written()
        fetched = partitions, offsets  # gaps are between the offsets sought and fetched
        if kept < len(offsets):
            rows = rows.filter(pa.array(keep))
            partitions, offsets = partitions[keep], offsets[keep]
        last_offsets = {
            p: int(offsets[partitions == p].max()) for p in np.unique(partitions).tolist()
        }
        table = self._table(rows)
        # Into the table opened (and brought up to date) just above: a URI would make
        # write_deltalake load the whole Delta log again for every batch. (Locked: the
        # table object is shared with the main thread's stored_positions.)
        with self.table_lock:
            write_deltalake(
                self.table if self.table is not None else self.uri,
                table,
                mode="append",
                partition_by=["event_date"],
                configuration=lake.TABLE_CONFIGURATION,
                storage_options=self.options,
                writer_properties=WRITER_PROPERTIES,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(lake.bronze_app_id(self.topic, p), v)
                                      for p, v in sorted(last_offsets.items())]
                ),
            )
        s = self.summary
        s.trimmed += trimmed
        self._note_gaps(*fetched, batch)
        s.written += table.num_rows
        s.batches += 1
        event_date = table.column("event_date")
        s.undated += event_date.null_count
        s.dates.update(d for d in pc.unique(event_date).to_pylist() if d is not None)
        s.last_offsets.update(last_offsets)
        s.last_write_at = time.monotonic()
        return Written()

    def _table(self, rows: pa.Table) -> pa.Table:
        """Fetched records as bronze rows, with their event dates."""
        n = rows.num_rows
        stamps = rows["timestamp"].combine_chunks()
        kafka_ts = pc.if_else(pc.less(stamps, 0), pa.scalar(None, pa.int64()), stamps)
        table = pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(self.topic, pa.string()), n),
                rows["partition"],
                rows["offset"],
                kafka_ts.cast(pa.timestamp("ms", tz="UTC")),
                rows["key"],
                rows["value"],
                pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC")), n),
                pa.nulls(n, pa.date32()),
            ],
            schema=BRONZE_SCHEMA,
        )
        return table.set_column(
            table.schema.get_field_index("event_date"), BRONZE_SCHEMA.field("event_date"),
            event_dates(rows["value"], lake.read_times(table)),
        )

    def _note_gaps(self, partitions: np.ndarray, offsets: np.ndarray, batch: Batch) -> None:
        """Offsets the topic no longer has (retention) are reported, not silently skipped."""
        for p in np.unique(partitions).tolist():
            first = int(offsets[partitions == p].min())
            want = batch.expected.get(p)
            if want is not None and p not in batch.replaced and first > want:
                self.summary.gaps.append(f"partition {p}: offsets {want}..{first - 1}")


def run_bronze(
    settings: Settings,
    until_idle: float | None = None,
    *,
    max_batch_rows: int = 100_000,  # peak RSS 0.94 GB at full scale (150 000: 1.09 GB)
    max_batch_seconds: float = 5.0,
    join_timeout: float = 60.0,
    partitions: tuple[int, ...] | None = None,
    on_progress: Callable[[BronzeSummary], None] | None = None,
    metrics: Any = None,
) -> BronzeSummary:
    """Copy the topic into bronze until stopped (SIGTERM/SIGINT) or, with `until_idle`,
    until no record arrived for that many seconds. Safe to kill at any instant.

    partitions: None = join the consumer group `tripflow-bronze` (the default; several
    loaders share the partitions); () = assign every partition directly; (0, 2) = those.
    """
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be at least 1")
    dsn = db.prepare(settings)
    bound_process_memory(BATCH_MMAP_THRESHOLD)
    sink = BronzeSink(settings)
    options = ConsumerOptions(
        group_id=GROUP_ID, partitions=partitions, until_idle=until_idle,
        batch_max_records=max_batch_rows, batch_max_s=max_batch_seconds,
        fetch_slice=10_000, poll_s=0.25, wait_s=0.25, close_when_full=True,
        close_when_quiet=True,
        # One batch written while the next is read (the writer is the faster side); a
        # second one waiting would only hold its rows in memory.
        max_inflight=1,
        # A batch run (until_idle) with no topic is a mistake to report; a long-running
        # loader started beside its producer waits for the topic, as the stream worker does.
        missing_topic="error" if until_idle is not None else "wait",
        join_grace_s=float("inf"), join_timeout_s=join_timeout,
        check_timeout_s=CHECK_TIMEOUT_S, check_limit_s=CHECK_LIMIT_S, commit_hint=True,
        # Large fetches: bronze is about throughput.
        config={"client.id": "tripflow-bronze", "fetch.max.bytes": 52_428_800,
                "max.partition.fetch.bytes": 8_388_608,
                # librdkafka's prefetch queue, per partition: bounded, it was a large part
                # of bronze's RSS (512 MB each before); 8 MB or less starves the reads.
                "queued.max.messages.kbytes": 32_768},
        error=BronzeError, writer_name="bronze-writer")
    stop = threading.Event()
    summary = sink.summary

    def tick(loop: ExactlyOnceConsumer) -> None:
        summary.records, summary.first_record_at = loop.stats.records, \
            loop.stats.first_record_at
        summary.seconds = time.monotonic() - loop.started
        if on_progress:
            on_progress(summary)

    loop = ExactlyOnceConsumer(settings, options, sink, stop=stop, on_tick=tick,
                               metrics=metrics)  # observability.metrics.WorkerMetrics
    with logged_run(dsn, "bronze") as stats, stop_on_signals(stop):
        try:
            result = loop.run()
        finally:
            summary.records = loop.stats.records
            summary.first_record_at = loop.stats.first_record_at
            summary.seconds = loop.stats.seconds
            stats.rows_in, stats.rows_out = summary.records, summary.written
            stats.dates = summary.date_range()
            stats.detail = (f"{summary.trimmed} already in bronze, {summary.undated} without "
                            f"a date, {summary.batches} batches, last offsets "
                            f"{summary.last_offsets}"
                            + (f"; GAPS {summary.gaps}" if summary.gaps else "")
                            + (f"; REPLACED LOGS {summary.replaced}" if summary.replaced
                               else ""))
    summary.seconds = result.seconds
    return summary
