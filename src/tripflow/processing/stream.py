"""The hot path's stream worker (`tripflow stream`): Kafka → hot store → real-time marts.

Loop: collect a micro-batch (up to `batch_max_records` records, or `batch_max_ms` after
the first one arrived; records of partitions running ahead in event time wait, see
`tripflow.processing.alignment`) → run the one parser (`tripflow.records.parser.
parse_batch`, "read time" = each record's Kafka timestamp, like the batch path) → commit it
with `HotStore.commit_batch`: clicks, quarantine, offsets and mart refresh in one
PostgreSQL transaction (see `tripflow.processing.hotstore`). The commit runs in a thread
while the next batch is fetched and parsed (PostgreSQL and Python then use both cores).
Kafka's own offset commits are never used: on assignment the worker seeks to the offsets
stored in PostgreSQL, so a crash at any instant followed by a restart gives the same
final state.

Any number of workers may run in the consumer group `tripflow-hot`: partitions are spread
over them, each commit is fenced on the stored offsets (a batch read by a worker that
lost its partition meanwhile is rolled back and re-read from the stored offset), and
refreshes are serialised by an advisory lock, so N workers give the same marts as one.
`StreamOptions.partitions` assigns partitions directly instead (no group: no join delay,
for a single worker or fixed assignments); exactly-once holds the same way.

Resilience:
- PostgreSQL unreachable or restarted: the batch's transaction is lost or its outcome is
  unknown; the worker reconnects with backoff and retries the same batch (the fence
  tells whether it was committed already).
- Broker unreachable: librdkafka reconnects with backoff; the worker logs it and waits.
- The broker's log replaced (the embedded broker forgets everything on restart): on every
  assignment, and after every broker outage, the worker re-reads the record just before
  its stored offset and compares it with the fingerprint stored with the offset. If it
  differs, or the stored offset lies beyond the log end (no record arrives and the high
  watermark is below it), it logs that loudly and reads the partition from the start of
  the new log (dedup makes re-reading harmless).

Event-time clock, late clicks, snapshots: see `hotstore` and `hot_marts`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from tripflow import db
from tripflow.messaging.config import consumer_config
from tripflow.processing.alignment import PartitionBuffers, event_ms
from tripflow.processing.hotstore import (
    DEFAULT_GROUP,
    HOT_COLUMNS,
    BatchCounts,
    CommitResult,
    HotOptions,
    HotStore,
    PartitionEnd,
    _iso,
)
from tripflow.records.parser import ParseResult, parse_batch, release_memory
from tripflow.settings import Settings

log = logging.getLogger("tripflow.stream")

# How long to wait for the record before a stored offset before asking the broker where
# its log ends (a record that exists arrives within milliseconds).
CHECK_TIMEOUT_S = 3.0
# --until-idle: how long to wait for a first assignment (group joins take seconds).
JOIN_GRACE_S = 15.0
PROGRESS_EVERY_S = 10.0
# Event-time alignment (see tripflow.processing.alignment): a partition may run ahead of
# the others by half the horizon (their records then stay well inside it), and a partition
# held back for this long goes anyway (a click dated far ahead must not stop it for good).
STALL_LIMIT_S = 10.0
# Records per parser call (see _prepare).
PARSE_SLICE = 4_096
# Records per consume call. Until they are copied into Arrow rows, the messages keep their
# whole decompressed message sets in librdkafka's memory: tens of MB for 10,000.
FETCH_SLICE = 2_000
# A partition fetched without result for this long (time spent in consume calls while it
# is not paused) counts as read to its end. (librdkafka's
# partition-EOF event says so at once, but only when the broker's high watermark is exact:
# the embedded broker's lags the true end, so the event may never come.)
QUIET_S = 2.0
_MAX_BACKOFF_S = 10.0
_BROKER_DOWN = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
             KafkaError._UNKNOWN_PARTITION}
_OUT_OF_RANGE = {KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET}


@dataclass(frozen=True)
class StreamOptions:
    group_id: str = DEFAULT_GROUP
    horizon: timedelta = timedelta(hours=48)  # dedup horizon (event time)
    mart_retention: timedelta = timedelta(days=7)  # traffic minutes and snapshots
    batch_max_records: int = 15_000
    batch_max_ms: int = 300
    # librdkafka's prefetch: what it holds decompressed, ahead of the worker. Reading a
    # backlog fast needs a short queue refilled at once (see _make_consumer), not a long one.
    fetch_max_bytes: int = 32 * 2**20
    queued_max_kbytes: int = 4 * 2**10
    # None: join the consumer group. Otherwise assign these partitions directly
    # (an empty tuple = every partition of the topic).
    partitions: tuple[int, ...] | None = None

    def hot_options(self) -> HotOptions:
        return HotOptions(group_id=self.group_id, horizon=self.horizon,
                          mart_retention=self.mart_retention)


@dataclass
class BatchReport:
    """What on_commit receives after each committed batch."""

    committed_at: float  # time.time() right after the commit returned
    ends: dict[int, int]  # partition -> next offset now stored
    counts: BatchCounts
    clock: datetime | None
    timings_ms: dict[str, float]


@dataclass
class StreamSummary:
    records: int = 0
    clicks: int = 0
    new: int = 0
    duplicates: int = 0
    late_for_hot: int = 0
    quarantined: int = 0
    nul_removed: int = 0  # clicks that had U+0000 removed from a string field
    batches: int = 0
    fenced_batches: int = 0  # batches rolled back because another worker had stored them
    log_resets: int = 0  # partitions re-read from the start of a replaced log
    seconds: float = 0.0
    clock: str | None = None
    stopped: str = ""  # "idle" or "stop"
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, counts: BatchCounts) -> None:
        self.records += counts.records
        self.clicks += counts.clicks
        self.new += counts.new
        self.duplicates += counts.duplicates
        self.late_for_hot += counts.late
        self.quarantined += counts.quarantined
        self.nul_removed += counts.nul_removed
        self.batches += 1

    def line(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return (f"stream: {self.records:,} records in, {self.clicks:,} clicks: "
                f"{self.new:,} new, {self.duplicates:,} duplicates, "
                f"{self.late_for_hot:,} late for hot; {self.quarantined:,} quarantined; "
                + (f"U+0000 removed from {self.nul_removed:,}; " if self.nul_removed else "")
                + f"{self.batches:,} batches in {self.seconds:.1f} s ({rate:,.0f} records/s); "
                f"clock {self.clock or '-'}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Check:
    """A partition whose log must be shown to be the one the stored offset refers to."""

    offset: int  # the stored offset - 1: the last record already processed
    fingerprint: str
    since: float


class _Stopped(Exception):
    pass


# Fetched records wait as rows of this schema (not as Messages: a librdkafka message keeps
# its whole fetch response in memory; nor as Python objects, see alignment).
_RECORD_SCHEMA = pa.schema([
    ("value", pa.binary()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.int64()),  # Kafka timestamp, epoch ms (<= 0: none)
    ("key", pa.binary()),
])


@dataclass
class _Batch:
    records: int
    parsed: ParseResult
    ends: dict[int, PartitionEnd]
    expected: dict[int, int | None]
    generation: int
    parse_ms: float


@dataclass
class _Committed:
    result: CommitResult
    committed_at: float


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc


_LIBC = _libc()
_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3


def _malloc_trim() -> None:
    """glibc's malloc_trim: gives freed heap memory back to the OS. Each batch allocates
    and frees tens of MB; without it the process keeps the high-water mark."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _bound_process_memory() -> None:
    """A worker's memory settings, for its whole process (it runs nothing else):
    - at most two glibc arenas: by default each thread that allocates (librdkafka's,
      the committer, libpq's) gets its own arena, and each keeps its high-water mark;
    - blocks from 64 KiB up (Arrow buffers of fetched records, parsed batches) get their
      own mappings, returned to the OS when freed. By default glibc raises that threshold
      to the largest block freed so far, after which such blocks fragment its heap;
    - Arrow allocates with malloc, not its default mimalloc pool, which keeps freed pages
      cached (tens of MB across batches) and which malloc_trim cannot reach."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, 2)
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    pa.set_memory_pool(pa.system_memory_pool())


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def fingerprint(ts: int, key: bytes | None, value: bytes | None) -> str:
    """Identity of a record: its Kafka timestamp and a hash of key and value."""
    digest = xxhash.xxh64(key or b"")
    digest.update(b"\x00")
    digest.update(value or b"")
    return f"{ts}:{digest.hexdigest()}"


class StreamWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        until_idle: float | None = None,
        options: StreamOptions | None = None,
        stop: threading.Event | None = None,
        on_commit: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.until_idle = until_idle
        self.options = options or StreamOptions()
        self.stop = stop or threading.Event()
        self.on_commit = on_commit
        self.summary = StreamSummary()
        self.expected: dict[int, int | None] = {}  # assigned partition -> stored offset
        self.checks: dict[int, _Check] = {}
        self.skip_from: dict[int, int] = {}  # after a reset: drop stale records >= offset
        self.pending_seeks: dict[int, int] = {}
        self.bootstrap = ""
        slack = self.options.horizon / 2
        self.buffers = PartitionBuffers(
            slack_ms=int(slack / timedelta(milliseconds=1)),
            capacity=max(2_000, self.options.batch_max_records // 4))
        self.paused: set[int] = set()
        # Partitions whose last fetch found nothing more (librdkafka's partition EOF event;
        # the embedded broker's high watermark lags the true end, so it cannot tell).
        self.at_eof: set[int] = set()
        # Seconds spent fetching (inside consume calls, not paused) since the partition's
        # last record, assignment, seek or resume: time spent parsing or waiting for
        # PostgreSQL does not count, the fetcher may simply not have been asked.
        self.quiet_for: dict[int, float] = {}
        self.next_fetch: dict[int, int] = {}  # offset after the last record fetched
        self.high_hint: dict[int, int] = {}  # high watermark read at assignment
        self.store: HotStore | None = None  # the committer thread's connection
        self.control: HotStore | None = None  # the main thread's (offsets on assignment)
        self.consumer: Consumer | None = None
        # One batch is committed (in a thread: PostgreSQL's work overlaps with fetching and
        # parsing the next batch, on another core) while the next one is prepared.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tripflow-commit")
        self.inflight: tuple[_Batch, Future[_Committed]] | None = None
        self.generation = 0  # bumped when positions are reset: older prepared batches go
        self.started = time.monotonic()
        self.last_activity = self.started
        self.ever_assigned = False
        self.broker_down_since: float | None = None
        self.reverify = False  # after a broker outage: re-check the assigned partitions
        self._last_warning: dict[str, float] = {}
        self._progress_at = self.started
        self._progress_records = 0

    # -- logging helpers --------------------------------------------------------------

    def _warn_every(self, key: str, seconds: float, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -1e9) >= seconds:
            self._last_warning[key] = now
            log.warning(message, *args)

    # -- PostgreSQL with retries ----------------------------------------------------------

    def _with_db(self, store: HotStore, what: str, action: Callable[[HotStore], Any]) -> Any:
        """Run `action(store)`, reconnecting with backoff while PostgreSQL is unreachable."""
        delay, down_since, attempts = 0.5, None, 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                result = action(store)
            except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                attempts += 1
                if not store.broken() and attempts <= 5:
                    # deadlock, serialization failure, lock timeout: retry at once
                    log.warning("%s: %s; retrying", what, _first_line(err))
                    continue
                store.reset()
                down_since = down_since or time.monotonic()
                log.warning("PostgreSQL unreachable during %s (%s); retrying in %.1f s",
                            what, _first_line(err), delay)
                self.stop.wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            except psycopg.errors.CheckViolation as err:
                if "no partition" in str(err) and attempts < 3:
                    attempts += 1  # a partition vanished under us: reload and retry
                    store.reset()
                    continue
                raise
            if down_since is not None:
                log.info("PostgreSQL reachable again after %.1f s; %s continues",
                         time.monotonic() - down_since, what)
            return result

    # -- Kafka ------------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        config = consumer_config(self.settings, self.options.group_id, **{
            "client.id": "tripflow-stream",
            "error_cb": self._on_kafka_error,
            # Find a topic created (or re-created after a broker restart) quickly.
            "topic.metadata.refresh.interval.ms": 5000,
            # Bound prefetched memory (librdkafka: 64 MB queued, 50 MB per fetch).
            "queued.max.messages.kbytes": self.options.queued_max_kbytes,
            "fetch.max.bytes": self.options.fetch_max_bytes,
            # A partition whose queue was full is fetched again after 10 ms, not librdkafka's
            # 1 s: with a short queue that pause, not the broker, bounded a catch-up
            # (8 MB queue: 40 k records/s with the default, 400 k with this, 4 MB as fast).
            "fetch.queue.backoff.ms": 10,
            # Tells when a partition is read to its end (event-time alignment).
            "enable.partition.eof": True,
        })
        self.bootstrap = str(config["bootstrap.servers"])
        return Consumer(config)

    def _on_kafka_error(self, err: KafkaError) -> None:
        code = err.code()
        if code in _BROKER_DOWN:
            if self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
            self.reverify = True
            self._warn_every("broker", 10.0, "broker unreachable at %s (%s); the Kafka client "
                             "retries with backoff", self.bootstrap, err.str())
        elif err.fatal():
            raise KafkaException(err)
        else:
            self._warn_every(f"kafka-{code}", 10.0, "Kafka: %s", err.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self._assign(consumer, partitions)
        except _Stopped:
            consumer.assign(partitions)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        self._drain()  # an in-flight commit first, so the offsets read are the latest
        stored = self._with_db(self.control, "reading stored offsets",
                               lambda store: store.register(numbers))
        now = time.monotonic()
        resume = []
        for tp in partitions:
            offset, fp = stored.get(tp.partition, (None, None))
            self._forget(tp.partition)
            self.expected[tp.partition] = offset
            self.skip_from.pop(tp.partition, None)
            self.checks.pop(tp.partition, None)
            if offset is None:
                tp.offset = OFFSET_BEGINNING
            elif offset > 0 and fp:
                tp.offset = offset - 1  # re-read the last processed record to verify it
                self.checks[tp.partition] = _Check(offset - 1, fp, now)
            else:
                tp.offset = offset
            self.at_eof.discard(tp.partition)
            self.quiet_for[tp.partition] = 0.0
            self.next_fetch[tp.partition] = max(tp.offset, 0)
            resume.append(f"{tp.partition}@{'start' if offset is None else offset}")
        consumer.assign(partitions)
        for tp in partitions:
            try:
                self.high_hint[tp.partition] = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=2, cached=False)[1]
            except KafkaException:
                self.high_hint.pop(tp.partition, None)
        self.ever_assigned = True
        self.last_activity = now
        log.info("assigned partitions of %s: %s", self.topic, ", ".join(resume) or "none")

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.expected.pop(tp.partition, None)
            self.checks.pop(tp.partition, None)
            self.skip_from.pop(tp.partition, None)
            self._forget(tp.partition)
        if partitions:
            log.info("partitions revoked: %s", ", ".join(str(tp.partition) for tp in partitions))

    def _assign_manual(self) -> bool:
        """Direct assignment (no group). False while the topic does not exist."""
        assert self.consumer is not None
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=5)
        except KafkaException as err:
            self._warn_every("metadata", 10.0, "cannot read metadata of %s: %s", self.topic,
                             err.args[0].str())
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self._warn_every("no-topic", 10.0, "topic %s does not exist (yet); waiting",
                             self.topic)
            return False
        wanted = self.options.partitions or tuple(sorted(topic.partitions))
        self._assign(self.consumer, [TopicPartition(self.topic, p) for p in wanted])
        return True

    def _reverify(self) -> None:
        """After a broker outage: check that each assigned partition's log is still ours."""
        assert self.consumer is not None
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=2)
        except KafkaException:
            return
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return
        self.reverify = False
        if self.broker_down_since is not None:
            log.info("broker reachable again after %.1f s",
                     time.monotonic() - self.broker_down_since)
            self.broker_down_since = None
        assigned = sorted(self.expected)
        if not assigned:
            return
        self._drain()
        stored = self._with_db(self.control, "reading stored offsets",
                               lambda s: s.register(assigned))
        now = time.monotonic()
        for p in assigned:
            offset, fp = stored.get(p, (None, None))
            self.expected[p] = offset
            if offset and fp:
                self.checks[p] = _Check(offset - 1, fp, now)
                self._seek(p, offset - 1)
            else:
                self._seek(p, OFFSET_BEGINNING if offset is None else offset)
        log.info("re-checking partitions %s of %s after the broker outage",
                 ", ".join(map(str, assigned)), self.topic)

    def _seek(self, partition: int, offset: int) -> None:
        assert self.consumer is not None
        self._forget(partition)  # what is buffered came from the old position
        self.at_eof.discard(partition)
        self.quiet_for[partition] = 0.0
        self.next_fetch[partition] = max(offset, 0)
        try:
            self.consumer.seek(TopicPartition(self.topic, partition, offset))
            self.pending_seeks.pop(partition, None)
        except KafkaException as err:
            # e.g. not fetching yet right after an assignment: try again shortly
            log.warning("seek of partition %d to %d failed (%s); retrying",
                        partition, offset, err.args[0].str())
            self.pending_seeks[partition] = offset

    def _log_replaced(self, partition: int, why: str) -> None:
        log.error("!!! partition %d of %s: %s. The broker's log was replaced (an embedded "
                  "broker forgets everything on restart). Reading partition %d from the start "
                  "of the new log; records already stored are recognised as duplicates.",
                  partition, self.topic, why, partition)
        self.summary.log_resets += 1

    def _check_message(self, msg: Message, check: _Check) -> bool:
        """Handle the first record of a partition being verified. True: process it."""
        p, offset = msg.partition(), msg.offset()
        del self.checks[p]
        if offset == check.offset:
            if fingerprint(msg.timestamp()[1], msg.key(), msg.value()) == check.fingerprint:
                return False  # verified: it was processed already
            self._log_replaced(p, f"the record at offset {offset} is not the one stored "
                                  f"there before")
            self.skip_from[p] = offset
            self._seek(p, OFFSET_BEGINNING)
            return False
        if offset < check.offset:
            # The broker reset the position (offset out of range): we are at its start.
            self._log_replaced(p, f"the stored offset {check.offset + 1} is beyond the log "
                                  f"end (the broker reset the position to {offset})")
            return True
        log.warning("partition %d: the record at offset %d is gone (retention?); cannot "
                    "verify the log, continuing at %d", p, check.offset, offset)
        return True

    def _expire_checks(self) -> None:
        """A verified record never came: ask where the log ends."""
        assert self.consumer is not None
        now = time.monotonic()
        for p, check in list(self.checks.items()):
            if now - check.since < CHECK_TIMEOUT_S:
                continue
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=5, cached=False)
            except KafkaException as err:
                self._warn_every(f"wm-{p}", 10.0, "partition %d: cannot read watermarks (%s)",
                                 p, err.args[0].str())
                check.since = now
                continue
            if high <= check.offset:
                del self.checks[p]
                self._log_replaced(p, f"the stored offset {check.offset + 1} is beyond the log "
                                      f"end (about {high})")
                self.skip_from[p] = check.offset
                self._seek(p, OFFSET_BEGINNING)
            else:
                check.since = now
                self._warn_every(f"check-{p}", 10.0, "partition %d: waiting for the record at "
                                 "offset %d (log end about %d)", p, check.offset, high)

    # -- batches ----------------------------------------------------------------------

    def _collect(self) -> list[pa.Table]:
        """The next micro-batch: records fetched within `batch_max_ms` of the first one (or
        `batch_max_records`), released in event-time order across partitions."""
        assert self.consumer is not None
        opts = self.options
        start = time.monotonic()
        deadline: float | None = None
        arrived = 0
        while not self.stop.is_set():
            now = time.monotonic()
            timeout = 0.5 - (now - start) if deadline is None else deadline - now
            if timeout <= 0:
                break
            if self.buffers.size() and all(
                    p in self.paused or p in self.at_eof for p in self.expected):
                break  # records wait and nothing more can arrive now
            fetching = time.monotonic()
            # consume() waits for its whole timeout unless it fills num_messages: short
            # slices, so a batch closes right at its deadline.
            got = self.consumer.consume(num_messages=FETCH_SLICE, timeout=min(timeout, 0.05))
            fetching = time.monotonic() - fetching
            for p in self.expected:
                if p not in self.paused:
                    self.quiet_for[p] = self.quiet_for.get(p, 0.0) + fetching
            arrived += self._buffer(got)
            del got  # copied: let librdkafka free the messages before the next fetch
            if arrived and deadline is None:
                deadline = time.monotonic() + opts.batch_max_ms / 1000
        released = self.buffers.release(self._bound(), opts.batch_max_records,
                                        now=time.monotonic(), stall_s=STALL_LIMIT_S)
        if self.buffers.forced:
            log.warning("event-time alignment: partition(s) %s held back for %.0f s (a record "
                        "dated far ahead of the other partitions?); released regardless",
                        sorted(self.buffers.forced), STALL_LIMIT_S)
        for p in list(self.paused):
            if self.buffers.size(p) <= self.buffers.capacity // 2:
                self._pause(p, False)
        return released

    def _bound(self) -> int:
        return self.buffers.bound(list(self.expected), self._may_have_more)

    def _buffer(self, got: list[Message]) -> int:
        """Put fetched records into the partition buffers; returns how many arrived."""
        arrived = 0
        expected = self.expected
        special = bool(self.checks or self.skip_from or self.pending_seeks)
        fetched: dict[int, tuple[list[Any], ...]] = {}
        for msg in got:
            err = msg.error()
            if err is not None:
                self._on_message_error(msg, err)
                continue
            arrived += 1
            p = msg.partition()
            if p not in expected:
                continue  # revoked meanwhile
            self.next_fetch[p] = msg.offset() + 1
            if special and not self._wanted(msg, p):
                continue
            value = msg.value()
            ts = msg.timestamp()[1]
            columns = fetched.get(p)
            if columns is None:
                columns = fetched[p] = ([], [], [], [], [])
            times, values, offsets, stamps, keys = columns
            times.append(event_ms(value, ts))
            values.append(value)
            offsets.append(msg.offset())
            stamps.append(ts)
            keys.append(msg.key())
        for p, (times, values, offsets, stamps, keys) in fetched.items():
            self.at_eof.discard(p)
            self.quiet_for[p] = 0.0
            rows = pa.table([values, pa.repeat(pa.scalar(p, pa.int32()), len(values)),
                             offsets, stamps, keys], schema=_RECORD_SCHEMA)
            self.buffers.extend(p, times, rows)
            if p not in self.paused and self.buffers.full(p):
                self._pause(p, True)
        if arrived:
            self.last_activity = time.monotonic()
            if self.broker_down_since is not None and not self.reverify:
                self.broker_down_since = None
        return arrived

    def _wanted(self, msg: Message, p: int) -> bool:
        """The rare cases: partitions being verified, reset or moved."""
        if p in self.pending_seeks:
            return False  # to be re-read from elsewhere
        skip = self.skip_from.get(p)
        if skip is not None:
            if msg.offset() >= skip:
                return False  # fetched before the seek to the start
            del self.skip_from[p]
        check = self.checks.get(p)
        return check is None or self._check_message(msg, check)

    def _pause(self, partition: int, pause: bool) -> None:
        assert self.consumer is not None
        tp = [TopicPartition(self.topic, partition)]
        try:
            (self.consumer.pause if pause else self.consumer.resume)(tp)
        except KafkaException as err:
            log.debug("pause/resume of partition %d: %s", partition, err)
            return
        (self.paused.add if pause else self.paused.discard)(partition)
        self.quiet_for[partition] = 0.0

    def _may_have_more(self, partition: int) -> bool:
        """Whether the broker may hold records of this partition not fetched yet."""
        if partition in self.paused:
            return True
        # Below the high watermark there are records for sure (the embedded broker's lags the
        # true end by one produced batch at most, so this is a lower bound).
        try:
            high = self.consumer.get_watermark_offsets(  # type: ignore[union-attr]
                TopicPartition(self.topic, partition), cached=True)[1]
        except KafkaException:
            high = -1
        if high is None or high < 0:
            high = self.high_hint.get(partition, -1)
        if self.next_fetch.get(partition, 0) < high:
            return True
        if partition in self.at_eof:
            return False
        return self.quiet_for.get(partition, 0.0) < QUIET_S

    def _forget(self, partition: int) -> None:
        """Drop what is buffered for a partition (revoked, or about to be re-read)."""
        self.buffers.drop(partition)
        if partition in self.paused:
            self._pause(partition, False)
            self.paused.discard(partition)

    def _on_message_error(self, msg: Message, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            self.at_eof.add(msg.partition())
            return
        if code in _NO_TOPIC:
            self.reverify = True
            self._warn_every("no-topic", 10.0, "topic %s not available (%s); waiting",
                             self.topic, err.str())
        elif code in _OUT_OF_RANGE:
            p = msg.partition()
            log.error("!!! partition %s of %s: offset out of range (%s); the broker's log no "
                      "longer holds the stored position, reading from its start",
                      p, self.topic, err.str())
        elif code in _BROKER_DOWN:
            self._on_kafka_error(err)
        else:
            self._warn_every(f"msg-{code}", 10.0, "Kafka: %s", err.str())

    def _prepare(self, released: list[pa.Table]) -> _Batch:
        """Parse a batch and note where it leaves each partition (main thread)."""
        started = time.perf_counter()
        ends: dict[int, PartitionEnd] = {}
        for part in released:  # each part holds one partition's records, in fetch order
            last = part.slice(part.num_rows - 1).to_pylist()[0]
            ends[last["partition"]] = PartitionEnd(
                last["offset"] + 1, fingerprint(last["timestamp"], last["key"], last["value"]))
        records = pa.concat_tables(released)
        n = records.num_rows
        values = records["value"]
        context = pa.table({
            "topic": pa.repeat(pa.scalar(self.topic), n),
            "partition": records["partition"],
            "offset": records["offset"],
        })
        stamps = records["timestamp"]
        read_at = pc.if_else(pc.greater(stamps, 0), stamps, pa.scalar(None, pa.int64()))
        # Parsed a slice at a time: the parser's working memory grows with its input, and
        # a batch stays one commit. Clicks keep only what the hot store reads.
        slices = [parse_batch(values.slice(i, PARSE_SLICE), context=context.slice(i, PARSE_SLICE),
                              read_ms=read_at.slice(i, PARSE_SLICE))
                  for i in range(0, n, PARSE_SLICE)]
        parsed = ParseResult(
            pa.concat_tables([part.clicks.select(HOT_COLUMNS) for part in slices]),
            pa.concat_tables([part.quarantine for part in slices]),
            sum(part.nul_removed for part in slices))
        del slices
        release_memory()
        expected = {p: self.expected.get(p) for p in ends}
        # Optimistic: the next batch expects this one to be committed (if it is not, the
        # positions are reset and the next batch, prepared meanwhile, is dropped).
        for p, end in ends.items():
            self.expected[p] = end.next_offset
        return _Batch(n, parsed, ends, expected, self.generation,
                      round((time.perf_counter() - started) * 1000, 2))

    def _commit(self, batch: _Batch) -> _Committed:
        """The committer thread: one transaction per batch, then pruning when due."""
        store = self.store
        assert store is not None
        result = self._with_db(store, "committing a batch", lambda s: s.commit_batch(
            batch.parsed, records=batch.records, ends=batch.ends, expected=batch.expected))
        committed_at = time.time()
        if result.committed and store.prune_due():
            try:
                self._with_db(store, "pruning the hot store", lambda s: s.prune())
            except psycopg.Error as err:  # e.g. lock timeout: the next batch tries again
                log.warning("pruning the hot store failed (%s); will retry", _first_line(err))
        return _Committed(result, committed_at)

    def _submit(self, batch: _Batch) -> None:
        assert self.inflight is None
        self.inflight = (batch, self._committer.submit(self._commit, batch))

    def _drain(self) -> None:
        """Wait for the in-flight batch, if any, and account for it."""
        if self.inflight is None:
            return
        batch, future = self.inflight
        self.inflight = None
        done = future.result()  # re-raises _Stopped and unexpected errors
        result = done.result
        if not result.committed:
            self.summary.fenced_batches += 1
            changed = {p: (batch.expected.get(p), stored) for p, stored in result.stored.items()
                       if stored != batch.expected.get(p)}
            log.warning("batch not committed: stored offsets moved (partition: expected → "
                        "stored) %s — another worker, or a commit whose reply was lost, "
                        "stored them; re-reading from the stored offsets", changed)
            self._resync()
            return
        self.summary.add(result.counts)
        self.summary.clock = _iso(result.clock)
        if batch.records >= 1000:
            _malloc_trim()
        if self.on_commit is not None:
            self.on_commit(BatchReport(done.committed_at,
                                       {p: e.next_offset for p, e in batch.ends.items()},
                                       result.counts, result.clock,
                                       {"parse": batch.parse_ms, **result.timings_ms}))
        log.debug("batch of %d records: %s new, %s dup, %s late, %s bad; clock %s; ms %s",
                  batch.records, result.counts.new, result.counts.duplicates,
                  result.counts.late, result.counts.quarantined, _iso(result.clock),
                  {"parse": batch.parse_ms, **result.timings_ms})

    def _resync(self) -> None:
        """Reset every assigned partition to its stored offset (after a fenced batch)."""
        self.generation += 1
        assigned = sorted(self.expected)
        if not assigned:
            return
        stored = self._with_db(self.control, "reading stored offsets",
                               lambda s: s.register(assigned))
        for p in assigned:
            offset = stored.get(p, (None, None))[0]
            self.expected[p] = offset
            self.checks.pop(p, None)
            self.skip_from.pop(p, None)
            self._seek(p, OFFSET_BEGINNING if offset is None else offset)

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY_S:
            return
        records = self.summary.records - self._progress_records
        if records or self.ever_assigned:
            log.info("stream: %s records in the last %.0f s (%.0f/s); %s new clicks in total; "
                     "clock %s; partitions %s", f"{records:,}", now - self._progress_at,
                     records / (now - self._progress_at), f"{self.summary.new:,}",
                     self.summary.clock or "-",
                     ", ".join(f"{p}@{o}" for p, o in sorted(self.expected.items())) or "none")
        self._progress_at, self._progress_records = now, self.summary.records

    def _idle(self) -> bool:
        if self.until_idle is None:
            return False
        now = time.monotonic()
        if not self.ever_assigned and now - self.started < max(self.until_idle, JOIN_GRACE_S):
            return False
        return (now - self.last_activity >= self.until_idle and not self.checks
                and not self.buffers.size())

    # -- main loop --------------------------------------------------------------------

    def run(self) -> StreamSummary:
        started = time.monotonic()
        manual = self.options.partitions is not None
        try:
            dsn = self._prepare_db()
            hot = self.options.hot_options()
            self.store = HotStore(dsn, self.topic, hot)
            self.control = HotStore(dsn, self.topic, hot)
            self._with_db(self.store, "connecting", lambda store: store.conn)
            self.consumer = self._make_consumer()
            log.info("stream worker started: topic %s, %s, horizon %s, batches of up to "
                     "%d records / %d ms", self.topic,
                     "partitions assigned directly" if manual else
                     f"consumer group {self.options.group_id}",
                     self.options.horizon, self.options.batch_max_records,
                     self.options.batch_max_ms)
            if not manual:
                self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                        on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self.summary.stopped = self._loop(manual)
            self._drain()  # a clean stop commits what is in flight
        except _Stopped:
            self.summary.stopped = "stop"
        finally:
            self._committer.shutdown(wait=True, cancel_futures=True)
            if self.consumer is not None:
                try:
                    self.consumer.close()
                except (KafkaException, RuntimeError) as err:
                    log.warning("closing the consumer: %s", err)
            for store in (self.store, self.control):
                if store is not None:
                    store.close()
            self.summary.seconds = round(time.monotonic() - started, 3)
        return self.summary

    def _loop(self, manual: bool) -> str:
        while not self.stop.is_set():
            if manual and not self.ever_assigned and not self._assign_manual():
                if self._idle():
                    return "idle"
                self.stop.wait(1.0)
                continue
            if self.reverify:
                self._reverify()
            for p, offset in list(self.pending_seeks.items()):
                if p in self.expected:
                    self._seek(p, offset)
                else:
                    del self.pending_seeks[p]
            released = self._collect()
            batch = self._prepare(released) if released else None
            del released  # parsed: not kept while the next batch is collected
            if self.inflight is not None and (batch is not None or self.inflight[1].done()):
                self._drain()
            if batch is not None and batch.generation == self.generation:
                self._submit(batch)
            if self.checks:
                self._expire_checks()
            self._progress()
            if batch is None and self.inflight is None and self._idle():
                return "idle"
        return "stop"

    def _prepare_db(self) -> str:
        """Migrate and connect, waiting for PostgreSQL with backoff."""
        delay, attempts = 0.5, 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return db.prepare(self.settings)
            except psycopg.OperationalError as err:
                log.warning("PostgreSQL unreachable (%s); retrying in %.1f s",
                            _first_line(err), delay)
            except psycopg.errors.InternalError as err:
                # Workers starting together race on `alter role` in db.prepare ("tuple
                # concurrently updated"): harmless, try again.
                attempts += 1
                if attempts > 5:
                    raise
                log.info("preparing the database: %s; retrying", _first_line(err))
            self.stop.wait(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)


def run_stream(
    settings: Settings,
    until_idle: float | None = None,
    *,
    options: StreamOptions | None = None,
    stop: threading.Event | None = None,
    on_commit: Callable[[BatchReport], None] | None = None,
) -> StreamSummary:
    """Run the hot-path worker until `stop` is set, or until no record arrived for
    `until_idle` seconds. Returns what it did (`summary.line()` is the one-line summary)."""
    _bound_process_memory()
    return StreamWorker(settings, until_idle=until_idle, options=options, stop=stop,
                        on_commit=on_commit).run()


def parse_partitions(text: str | None) -> tuple[int, ...] | None:
    """CLI helper: None → group mode; "all" → every partition; "0,2" → those."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return ()
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


__all__ = [
    "BatchReport",
    "HotStatus",
    "StreamOptions",
    "StreamSummary",
    "StreamWorker",
    "hot_status",
    "parse_partitions",
    "run_stream",
]


# -- status ---------------------------------------------------------------------------


@dataclass
class PartitionStatus:
    partition: int
    stored: int | None  # next offset stored with the hot store (None: nothing yet)
    known_end: int | None  # the broker's high watermark: approximate (tansu reports less)
    updated_at: datetime | None

    @property
    def lag(self) -> int | None:
        if self.known_end is None:
            return None
        return max(self.known_end - (self.stored or 0), 0)


@dataclass
class HotStatus:
    group: str
    topic: str
    partitions: list[PartitionStatus]
    clock: datetime | None
    last_commit_at: datetime | None
    freshness_s: float | None  # now - last committed batch
    store_rows: int
    store_bytes: int
    store_days: int
    store_from: datetime | None
    totals: dict[str, int]  # records, clicks_new, duplicates, late_for_hot, quarantined,
    #                         batches, nul_removed
    broker_error: str | None = None


def hot_status(settings: Settings, *, group: str = DEFAULT_GROUP,
               timeout: float = 5.0) -> HotStatus:
    """What `tripflow status` shows about the hot path (reads PostgreSQL and the broker;
    starts nothing)."""
    with db.connect(settings) as conn:
        row = conn.execute(
            """select clock, last_commit_at, extract(epoch from now() - last_commit_at),
                      store_from, records, clicks_new, duplicates, late_for_hot, quarantined,
                      batches, nul_removed
               from tripflow.hot_state""").fetchone()
        assert row is not None
        stored = {p: (offset, updated) for p, offset, updated in conn.execute(
            "select partition, next_offset, updated_at from tripflow.hot_offsets "
            "where consumer_group = %s and topic = %s", (group, settings.topic))}
        rows, size, days = conn.execute(
            """select (select count(*) from tripflow.hot_clicks),
                      coalesce(sum(pg_total_relation_size(i.inhrelid)), 0), count(*)
               from pg_inherits i where i.inhparent = 'tripflow.hot_clicks'::regclass"""
        ).fetchone()  # type: ignore[misc]
    ends: dict[int, int] = {}
    broker_error = None
    try:
        consumer = Consumer(consumer_config(settings, group, **{
            "client.id": "tripflow-status", "log_level": 0}))
        try:
            metadata = consumer.list_topics(settings.topic, timeout=timeout)
            topic = metadata.topics.get(settings.topic)
            if topic is None or topic.error is not None:
                broker_error = f"topic {settings.topic} not found"
            else:
                for p in sorted(topic.partitions):
                    ends[p] = consumer.get_watermark_offsets(
                        TopicPartition(settings.topic, p), timeout=timeout, cached=False)[1]
        finally:
            consumer.close()
    except (KafkaException, RuntimeError) as err:
        broker_error = _first_line(err)
    partitions = [PartitionStatus(p, stored.get(p, (None, None))[0], ends.get(p),
                                  stored.get(p, (None, None))[1])
                  for p in sorted(set(stored) | set(ends))]
    clock, last_commit, freshness, store_from, *totals = row
    names = ("records", "clicks_new", "duplicates", "late_for_hot", "quarantined", "batches",
             "nul_removed")
    return HotStatus(group, settings.topic, partitions, clock, last_commit,
                     float(freshness) if freshness is not None else None, rows, size, days,
                     store_from, dict(zip(names, totals, strict=True)), broker_error)
