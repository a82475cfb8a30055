"""Bronze: copy the topic into the Delta table `bronze/tripclick_raw_logs`, exactly once.

Every append is one Delta commit that also records, for each Kafka partition it covers, an
application transaction `tripflow-bronze:<topic>:<partition>` whose version is the last
offset written. That version, not Kafka's committed offset, is where reading resumes: on
start and after every rebalance the consumer seeks each assigned partition to version + 1
(Kafka offsets are committed too, only as a hint for lag monitoring). Right before a write
the versions are read again and rows at or below them are trimmed, so a batch that overlaps
what is already in the table (a retry, a rebalance race) never lands twice. A kill at any
instant leaves either the whole commit or none of it.

A replaced log (the embedded broker forgets everything on restart and hands out the same
offsets again, for other records): on assignment the record at each partition's last
written offset is read back and compared with the row bronze holds there. If it differs,
or the log now ends before it, the loader says so and copies the partition from the start
of the new log, its old version no longer trimming anything; the first append records the
new log's version. (Silver deduplicates by click, so records both logs hold count once.)

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
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from tripflow import db, lake
from tripflow.messaging.config import consumer_config
from tripflow.processing.runlog import logged_run
from tripflow.records.parser import parse_batch
from tripflow.settings import Settings

log = logging.getLogger("tripflow.bronze")

GROUP_ID = "tripflow-bronze"
_OUT_OF_RANGE = {KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET}
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

ONE_DAY_MS = 86_400_000
# Dates the parser rejects (too_old, in_future) are no partition: see event_dates().
_MIN_MS = 946_684_800_000  # 2000-01-01
# Fast path: `"DateCreated"` is the object's *first* key (as in every TripClick file), with a
# `/Date(ms)/` value (`/` optionally escaped as `\/`). The parser reads the first occurrence
# of a repeated key, and nothing nested can come before the first key, so when this matches
# the parser finds the same value. 18 digits always fit an int64. Only the head of the
# record is searched: it is where the key is, and it keeps the regex cheap.
_DATE_PATTERN = r'^\s*\[?\s*\{\s*"DateCreated"\s*:\s*"\\?/Date\((?P<ms>[0-9]{1,18})\)\\?/"'
_HEAD_BYTES = 96


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id holding a partition's last written offset."""
    return f"tripflow-bronze:{topic}:{partition}"


class BronzeError(RuntimeError):
    """Bronze could not run; the message says what to do."""


def event_dates(values: pa.Array, read_ms: pa.Array) -> pa.Array:
    """The `event_date` partition value of each raw record (date32, null = no usable date).

    `read_ms` is when each record was read (its Kafka timestamp), as the parser takes it.
    The regex decides when `"DateCreated"` is the record's first key with a plain
    `/Date(ms)/` value; anything else (other key orders, escaped keys, odd values, bad
    records) goes through the real parser, and gets the date of its click or null. A date
    the parser would reject (before 2000, more than a day after `read_ms`) is null too, so
    every dated partition holds only dates a click can have.
    """
    head = pc.binary_slice(values, 0, _HEAD_BYTES)
    found = pc.struct_field(pc.extract_regex(head, _DATE_PATTERN), "ms")
    ms = found.cast(pa.string()).cast(pa.int64())
    ok = pc.fill_null(
        pc.and_(pc.greater_equal(ms, _MIN_MS),
                pc.less_equal(pc.subtract(ms, ONE_DAY_MS), read_ms)),
        False,
    )
    ok_np = ok.to_numpy(zero_copy_only=False)
    days = np.zeros(len(values), dtype=np.int32)
    if ok_np.any():
        days[ok_np] = (pc.filter(ms, ok).to_numpy() // ONE_DAY_MS).astype(np.int32)
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


def read_times(table: pa.Table) -> pa.Array:
    """When each bronze row was read, as the parser's `read_ms`: its Kafka timestamp, else
    (a broker without timestamps) its ingestion time. Silver uses the same, so it stays a
    pure function of bronze."""
    # Delta stores timestamps in microseconds: normalise to ms before taking the integer.
    as_ms = pa.timestamp("ms", tz="UTC")
    kafka = table.column("kafka_timestamp").cast(as_ms).cast(pa.int64())
    ingested = table.column("ingested_at").cast(as_ms, safe=False).cast(pa.int64())
    return pc.coalesce(kafka, ingested).combine_chunks()


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


@dataclass
class _Batch:
    """Records taken off the consumer, as arrays (the Message objects are released)."""

    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    keys: pa.Array
    values: pa.Array


def _to_batch(msgs: list[Message]) -> _Batch:
    n = len(msgs)
    # map() over the C methods: the per-record cost that bounds bronze's throughput.
    return _Batch(
        partitions=np.fromiter(map(Message.partition, msgs), np.int32, n),
        offsets=np.fromiter(map(Message.offset, msgs), np.int64, n),
        timestamps=np.fromiter(map(itemgetter(1), map(Message.timestamp, msgs)), np.int64, n),
        keys=pa.array(list(map(Message.key, msgs)), pa.binary()),
        values=pa.array(list(map(Message.value, msgs)), pa.binary()),
    )


class _Loader:
    """One consumer in the `tripflow-bronze` group and the Delta appends it makes.

    The main thread consumes and turns records into arrays; one writer thread extracts
    dates, trims and appends, so consuming overlaps writing. Batches are written in the
    order they were read, and a rebalance waits for the writer to finish first.
    """

    def __init__(self, settings: Settings, max_batch_rows: int, max_batch_seconds: float,
                 on_progress: Callable[[BronzeSummary], None] | None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.uri = lake.table_uri(settings, lake.BRONZE)
        self.options = lake.storage_options(settings)
        self.max_batch_rows = max_batch_rows
        self.max_batch_seconds = max_batch_seconds
        self.on_progress = on_progress
        self.table: DeltaTable | None = None
        self.table_lock = threading.Lock()
        self.pending: list[Message] = []
        self.pending_since = 0.0
        self.assigned: set[int] = set()
        self.expected: dict[int, int] = {}  # next offset we expect per partition
        # Partitions whose log was replaced -> the old log's version, which trims nothing.
        self.stale: dict[int, int] = {}
        self.summary = BronzeSummary()
        self.last_activity = time.monotonic()
        self.stop = threading.Event()
        self.to_commit: dict[int, int] = {}  # written, not yet committed to Kafka
        # At most one batch waiting while another is written: bounded memory.
        self.queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self.writer_error: BaseException | None = None
        self.writer = threading.Thread(target=self._write_loop, name="bronze-writer", daemon=True)

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
            return {p: self.table.transaction_version(app_id(self.topic, p)) for p in partitions}

    # -- rebalance callbacks (run inside consume(), on the main thread) --------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.drain()
        versions = self.written_versions([tp.partition for tp in partitions])
        replaced = self._replaced_logs(
            {p: last for p, last in versions.items() if last is not None})
        for tp in partitions:
            p, last = tp.partition, versions[tp.partition]
            self.stale.pop(p, None)
            if p in replaced:
                self.stale[p] = last  # type: ignore[assignment]
                self.summary.replaced.append(f"partition {p}: {replaced[p]}")
                log.warning("partition %d of %s: %s. The broker's log was replaced (an "
                            "embedded broker forgets everything on restart); copying the "
                            "partition from the start of the new log.", p, self.topic,
                            replaced[p])
                tp.offset = OFFSET_BEGINNING
            else:
                tp.offset = OFFSET_BEGINNING if last is None else last + 1
                if last is not None:
                    self.expected[p] = last + 1
        consumer.assign(partitions)
        self.assigned = {tp.partition for tp in partitions}
        self.last_activity = time.monotonic()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Records buffered for partitions we lose are dropped, not written: whoever owns
        # them next resumes from the Delta versions, so nothing is lost. What is already
        # handed to the writer is finished first, so the next owner sees its versions.
        lost = {tp.partition for tp in partitions}
        self.pending = [m for m in self.pending if m.partition() not in lost]
        self.drain()
        self.commit_hint(consumer)
        self.assigned -= lost
        for p in lost:
            self.expected.pop(p, None)
            self.stale.pop(p, None)
        consumer.unassign()

    # -- writing -------------------------------------------------------------------------
    def submit(self) -> None:
        """Hand the pending records to the writer thread."""
        msgs, self.pending = self.pending, []
        if msgs:
            self._raise_writer_error()
            self.queue.put(_to_batch(msgs))

    def drain(self) -> None:
        """Wait until every submitted batch is written."""
        self.queue.join()
        self._raise_writer_error()

    def _raise_writer_error(self) -> None:
        if self.writer_error is not None:
            raise self.writer_error

    def _write_loop(self) -> None:
        while True:
            batch = self.queue.get()
            try:
                if batch is None:
                    return
                if self.writer_error is None:
                    self._write(batch)
            except BaseException as err:  # reported to the main thread
                self.writer_error = err
            finally:
                self.queue.task_done()

    def _write(self, b: _Batch) -> None:
        partitions, offsets = b.partitions, b.offsets
        # Trim what is already in bronze (versions re-read right before the write).
        versions = self.written_versions(np.unique(partitions).tolist())
        keep = np.ones(len(offsets), dtype=bool)
        for p, last in versions.items():
            if last is not None and self.stale.get(p) != last:  # (a replaced log's: none)
                keep &= ~((partitions == p) & (offsets <= last))
        kept = int(keep.sum())
        self.summary.trimmed += len(offsets) - kept
        if kept == 0:
            return
        timestamps, keys, values = b.timestamps, b.keys, b.values
        if kept < len(offsets):
            mask = pa.array(keep)
            partitions, offsets, timestamps = partitions[keep], offsets[keep], timestamps[keep]
            keys, values = keys.filter(mask), values.filter(mask)
        self._note_gaps(partitions, offsets)
        kafka_ts = pa.array(timestamps, pa.int64(), mask=timestamps < 0)
        n = len(offsets)
        table = pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(self.topic, pa.string()), n),
                pa.array(partitions, pa.int32()),
                pa.array(offsets, pa.int64()),
                kafka_ts.cast(pa.timestamp("ms", tz="UTC")),
                keys,
                values,
                pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC")), n),
                pa.nulls(n, pa.date32()),
            ],
            schema=BRONZE_SCHEMA,
        )
        table = table.set_column(
            table.schema.get_field_index("event_date"), BRONZE_SCHEMA.field("event_date"),
            event_dates(values, read_times(table)),
        )
        last_offsets = {
            p: int(offsets[partitions == p].max()) for p in np.unique(partitions).tolist()
        }
        write_deltalake(
            self.uri,
            table,
            mode="append",
            partition_by=["event_date"],
            storage_options=self.options,
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id(self.topic, p), v)
                                  for p, v in sorted(last_offsets.items())]
            ),
        )
        with self.table_lock:
            self.to_commit.update(last_offsets)
        s = self.summary
        s.written += n
        s.batches += 1
        event_date = table.column("event_date")
        s.undated += event_date.null_count
        s.dates.update(d for d in pc.unique(event_date).to_pylist() if d is not None)
        s.last_offsets.update(last_offsets)
        s.last_write_at = time.monotonic()
        for p, v in last_offsets.items():
            self.expected[p] = v + 1
            self.stale.pop(p, None)  # the version is the new log's now

    # -- is the log the one bronze copied? ----------------------------------------------------
    def _replaced_logs(self, last: dict[int, int]) -> dict[int, str]:
        """Partitions whose log is not the one bronze copied, with why: the record at the
        last written offset is not the one bronze holds there, or the log ends before it."""
        stored = self._stored_records(last)
        if not stored:
            return {}
        checker = Consumer(consumer_config(self.settings, GROUP_ID, **{
            "client.id": "tripflow-bronze-check", "log_level": 0,
            "auto.offset.reset": "error", "enable.partition.eof": True}))
        replaced: dict[int, str] = {}
        try:
            checker.assign([TopicPartition(self.topic, p, last[p]) for p in stored])
            pending, started = set(stored), time.monotonic()
            while pending:
                for msg in checker.consume(num_messages=100, timeout=0.2):
                    p = msg.partition()
                    if p not in pending:
                        continue
                    err = msg.error()
                    if err is None and msg.offset() >= last[p]:
                        pending.discard(p)
                        ts = msg.timestamp()[1]
                        got = (ts if ts >= 0 else None, msg.key(), msg.value())
                        if msg.offset() == last[p] and got != stored[p]:
                            replaced[p] = (f"the record at offset {last[p]} is not the one "
                                           "bronze holds there")
                    elif err is not None and err.code() in _OUT_OF_RANGE:
                        pending.discard(p)
                        replaced[p] = f"offset {last[p]} is beyond the log end"
                waited = time.monotonic() - started
                if waited >= CHECK_TIMEOUT_S:
                    for p in list(pending):
                        high = checker.get_watermark_offsets(
                            TopicPartition(self.topic, p), timeout=5, cached=False)[1]
                        if high <= last[p]:
                            pending.discard(p)
                            replaced[p] = (f"the log ends at about offset {high}, before "
                                           f"offset {last[p]}")
                if pending and waited >= CHECK_LIMIT_S:
                    raise BronzeError(
                        f"could not read back offset(s) {sorted((p, last[p]) for p in pending)} "
                        f"of topic {self.topic!r} (partition, offset) within "
                        f"{CHECK_LIMIT_S:.0f} s to check that its log is the one bronze "
                        "copied: is the broker healthy? Run again.")
        finally:
            checker.close()
        return replaced

    def _stored_records(self, last: dict[int, int]
                        ) -> dict[int, tuple[int | None, bytes | None, bytes | None]]:
        """Bronze's row at each partition's last written offset, as (Kafka timestamp in
        ms, key, value); the latest written one, should a replaced log have put two there.
        Only the files whose statistics can hold it are read."""
        if not last or self.table is None:
            return {}
        with self.table_lock:
            files = lake.files_holding(self.table, self.uri, last.items())
        rows = lake.read_positions(files, self.topic, last.items(),
                                   ["partition", "kafka_timestamp", "key", "value",
                                    "ingested_at"])
        found: dict[int, tuple[int | None, bytes | None, bytes | None]] = {}
        newest: dict[int, int] = {}
        for p, ms, key, value, at in zip(
                rows["partition"].to_pylist(),
                # (Delta hands timestamps back in microseconds)
                rows["kafka_timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
                .to_pylist(),
                rows["key"].to_pylist(), rows["value"].to_pylist(),
                rows["ingested_at"].cast(pa.int64()).to_pylist(), strict=True):
            if at >= newest.get(p, at):
                newest[p], found[p] = at, (ms, key, value)
        return found

    def commit_hint(self, consumer: Consumer) -> None:
        """Commit written offsets to Kafka, as a hint only (lag monitoring, other tools).
        Done on the consuming thread: a commit from the writer thread waits for consume()."""
        with self.table_lock:
            done, self.to_commit = self.to_commit, {}
        mine = {p: v for p, v in done.items() if p in self.assigned}
        if mine:
            consumer.commit(offsets=[TopicPartition(self.topic, p, v + 1)
                                     for p, v in mine.items()], asynchronous=True)

    def _note_gaps(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        """Offsets the topic no longer has (retention) are reported, not silently skipped."""
        for p in np.unique(partitions).tolist():
            first = int(offsets[partitions == p].min())
            want = self.expected.get(p)
            if want is not None and first > want:
                self.summary.gaps.append(f"partition {p}: offsets {want}..{first - 1}")

    # -- main loop -------------------------------------------------------------------------
    def run(self, until_idle: float | None, join_timeout: float,
            partitions: tuple[int, ...] | None = None) -> BronzeSummary:
        consumer = Consumer(consumer_config(
            self.settings, GROUP_ID,
            # Large fetches: bronze is about throughput.
            **{"fetch.max.bytes": 104_857_600, "max.partition.fetch.bytes": 16_777_216,
               "queued.max.messages.kbytes": 524_288},
        ))
        started = time.monotonic()
        self.last_activity = started
        self.writer.start()
        try:
            available = self._check_topic(consumer)
            if partitions is None:
                consumer.subscribe([self.topic], on_assign=self.on_assign,
                                   on_revoke=self.on_revoke, on_lost=self.on_revoke)
            else:
                # Direct assignment: no group join (its delay, its rebalances); resuming
                # works the same, from the Delta versions.
                wanted = sorted(partitions) if partitions else available
                missing = set(wanted) - set(available)
                if missing:
                    raise BronzeError(f"topic {self.topic!r} has no partition "
                                      f"{sorted(missing)} (it has {available})")
                self.on_assign(consumer, [TopicPartition(self.topic, p) for p in wanted])
            while not self.stop.is_set():
                room = max(1, min(10_000, self.max_batch_rows - len(self.pending)))
                msgs = consumer.consume(num_messages=room, timeout=0.25)
                now = time.monotonic()
                got = self._accept(msgs)
                if got:
                    if not self.pending:
                        self.pending_since = now
                    if self.summary.first_record_at is None:
                        self.summary.first_record_at = now
                    self.pending.extend(got)
                    self.summary.records += len(got)
                    self.last_activity = now
                full = len(self.pending) >= self.max_batch_rows
                old = self.pending and now - self.pending_since >= self.max_batch_seconds
                # Caught up (nothing this poll): write what we have, so bronze stays fresh.
                if full or old or (self.pending and not got):
                    self.submit()
                self._raise_writer_error()
                self.commit_hint(consumer)
                self.summary.seconds = time.monotonic() - started
                if self.on_progress:
                    self.on_progress(self.summary)
                if not self.assigned and now - started > join_timeout:
                    raise BronzeError(
                        f"no partition of topic {self.topic!r} was assigned to this loader in "
                        f"{join_timeout:.0f} s: is the broker healthy, or do other "
                        f"{GROUP_ID!r} consumers hold every partition?")
                if (until_idle is not None and self.assigned and not self.pending
                        and self.queue.unfinished_tasks == 0
                        and now - self.last_activity >= until_idle):
                    break
            self.submit()  # stopped by a signal: keep what was read
            self.drain()
        finally:
            self.queue.put(None)
            self.writer.join()
            self.commit_hint(consumer)
            consumer.close()
        self._raise_writer_error()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _accept(self, msgs: list[Message]) -> list[Message]:
        if not any(map(Message.error, msgs)):
            return msgs
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                raise BronzeError(f"Kafka error: {err.str()}")
            # Other errors (partition EOF, transient broker errors) are retried by librdkafka.
        return good

    def _check_topic(self, consumer: Consumer) -> list[int]:
        """The topic's partitions; BronzeError when it does not exist."""
        metadata = consumer.list_topics(self.topic, timeout=15)
        topic = metadata.topics.get(self.topic)
        if topic is None or (topic.error is not None and topic.error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC
        )):
            raise BronzeError(
                f"topic {self.topic!r} does not exist: produce records first "
                f"(`tripflow produce PATH`) or check TRIPFLOW_TOPIC")
        return sorted(topic.partitions)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT end the loop after the current batch is written (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_bronze(
    settings: Settings,
    until_idle: float | None = None,
    *,
    max_batch_rows: int = 200_000,
    max_batch_seconds: float = 5.0,
    join_timeout: float = 60.0,
    partitions: tuple[int, ...] | None = None,
    on_progress: Callable[[BronzeSummary], None] | None = None,
) -> BronzeSummary:
    """Copy the topic into bronze until stopped (SIGTERM/SIGINT) or, with `until_idle`,
    until no record arrived for that many seconds. Safe to kill at any instant.

    partitions: None = join the consumer group `tripflow-bronze` (the default; several
    loaders share the partitions); () = assign every partition directly; (0, 2) = those.
    """
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be at least 1")
    dsn = db.prepare(settings)
    loader = _Loader(settings, max_batch_rows, max_batch_seconds, on_progress)
    with logged_run(dsn, "bronze") as stats, _stop_on_signals(loader.stop):
        try:
            summary = loader.run(until_idle, join_timeout, partitions)
        finally:
            s = loader.summary
            stats.rows_in, stats.rows_out = s.records, s.written
            stats.dates = s.date_range()
            stats.detail = (f"{s.trimmed} already in bronze, {s.undated} without a date, "
                            f"{s.batches} batches, last offsets {s.last_offsets}"
                            + (f"; GAPS {s.gaps}" if s.gaps else "")
                            + (f"; REPLACED LOGS {s.replaced}" if s.replaced else ""))
    return summary
