"""The hot path's stream worker (`tripflow stream`): Kafka → hot store → real-time marts.

The worker is the one exactly-once consumer loop (`tripflow.messaging.consumer`) with the
hot store as its sink (`tripflow.processing.stream_sink`). Loop: collect a micro-batch (up
to `batch_max_records` records, or `batch_max_ms` after the first one arrived; records of
partitions running ahead in event time wait, see `tripflow.processing.alignment`) → run
the one parser (`tripflow.records.parser.parse_batch`, "read time" = each record's Kafka
timestamp, like the batch path) → commit it with `HotStore.commit_batch`: clicks,
quarantine, offsets and mart refresh (`tripflow.processing.hot_marts`) in one PostgreSQL
transaction (see `tripflow.processing.hotstore`). The commit runs in a thread while the
next batch is fetched and parsed (PostgreSQL and Python then use both cores). Kafka's own
offset commits are never used: on assignment the worker seeks to the offsets stored in
PostgreSQL, so a crash at any instant followed by a restart gives the same final state.
What `tripflow status` shows: `tripflow.processing.stream_status`.

Any number of workers may run in the consumer group `tripflow-hot`: partitions are spread
over them, each commit is fenced on the stored offsets (a batch read by a worker that
lost its partition meanwhile is rolled back and re-read from the stored offset), and
refreshes are serialised by an advisory lock, so N workers give the same marts as one.
Reading a backlog, each worker also waits for the others' partitions in event time (their
progress is exchanged in PostgreSQL, see `tripflow.processing.alignment`), so a fast worker
does not push the clock so far ahead that a slower one's clicks arrive late for hot.
`StreamOptions.partitions` assigns partitions directly instead (no group: no join delay,
for a single worker or fixed assignments); exactly-once holds the same way.

Resilience:
- PostgreSQL unreachable or restarted: the batch's transaction is lost or its outcome is
  unknown; the worker reconnects with backoff and retries the same batch (the fence
  tells whether it was committed already).
- Broker unreachable: librdkafka reconnects with backoff; the worker logs it and waits.
- The broker's log replaced (the embedded broker forgets everything on restart): on every
  assignment, and after every broker outage, the worker re-reads the record just before
  its stored offset and compares it with the fingerprint stored with the offset
  (`tripflow.messaging.verify`). If it
  differs, or the stored offset lies beyond the log end (no record arrives and the high
  watermark is below it), it logs that loudly and reads the partition from the start of
  the new log (dedup makes re-reading harmless).

Event-time clock, late clicks, snapshots: see `hotstore` and `hot_marts`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tripflow.memory import STREAM_MMAP_THRESHOLD, bound_process_memory
from tripflow.messaging.consumer import (
    ConsumerOptions,
    ExactlyOnceConsumer,
    Stopped,
    parse_partitions,
)
from tripflow.messaging.sink import fingerprint
from tripflow.processing.alignment import AlignedBuffers, Peers
from tripflow.processing.hotstore import DEFAULT_GROUP, BatchCounts, HotOptions
from tripflow.processing.stream_sink import HotSink, prepare_db
from tripflow.processing.stream_status import HotStatus, PartitionStatus, hot_status
from tripflow.settings import Settings

log = logging.getLogger("tripflow.stream")

# --until-idle: how long to wait for a first assignment (group joins take seconds).
JOIN_GRACE_S = 15.0
PROGRESS_EVERY_S = 10.0
# Event-time alignment (see tripflow.processing.alignment): a partition may run ahead of
# the others by half the horizon (their records then stay well inside it), and a partition
# held back for this long goes anyway (a click dated far ahead must not stop it for good).
STALL_LIMIT_S = 10.0
# Other workers' partitions are placed by where their unwritten records start (not by the
# latest fetched, like this worker's own), so records may go up to 3/4 of the horizon past
# them; the last quarter is for clicks that arrive out of order. (A two-worker backlog
# runs in lockstep: 1/2 gave 19.8 k events/s, 3/4 24.5-29.1 k.)
PEER_SLACK = 0.75
# Records per consume call. Until they are copied into Arrow rows, the messages keep their
# whole decompressed message sets in librdkafka's memory: tens of MB for 10,000.
FETCH_SLICE = 2_000


@dataclass(frozen=True)
class StreamOptions:
    group_id: str = DEFAULT_GROUP
    horizon: timedelta = timedelta(hours=48)  # dedup horizon (event time)
    mart_retention: timedelta = timedelta(days=7)  # traffic minutes and snapshots
    # A batch's refresh has a fixed cost (the 48 h trend snapshot, offsets, commit) that
    # larger batches share; at live rates batches close on batch_max_ms instead.
    batch_max_records: int = 20_000
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


class StreamWorker:
    """One hot-path worker: the consumer loop, the hot store sink, progress logging."""

    def __init__(
        self,
        settings: Settings,
        *,
        until_idle: float | None = None,
        options: StreamOptions | None = None,
        stop: threading.Event | None = None,
        on_commit: Callable[[BatchReport], None] | None = None,
        metrics: Any = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.until_idle = until_idle
        self.options = options or StreamOptions()
        self.stop = stop or threading.Event()
        self.on_commit = on_commit
        self.summary = StreamSummary()
        self._progress_at = time.monotonic()
        self._progress_records = 0
        self.metrics = metrics  # observability.metrics.WorkerMetrics, fed by the loop
        if metrics is not None:
            metrics.quarantined_total = lambda: self.summary.quarantined

    def consumer_options(self) -> ConsumerOptions:
        opts = self.options
        return ConsumerOptions(
            group_id=opts.group_id, partitions=opts.partitions, until_idle=self.until_idle,
            batch_max_records=opts.batch_max_records, batch_max_s=opts.batch_max_ms / 1000,
            fetch_slice=FETCH_SLICE, join_grace_s=JOIN_GRACE_S, writer_name="tripflow-commit",
            config={
                "client.id": "tripflow-stream",
                # Find a topic created (or re-created after a broker restart) quickly.
                "topic.metadata.refresh.interval.ms": 5000,
                # Bound prefetched memory (librdkafka: 64 MB queued, 50 MB per fetch).
                "queued.max.messages.kbytes": opts.queued_max_kbytes,
                "fetch.max.bytes": opts.fetch_max_bytes,
                # A partition whose queue was full is fetched again after 10 ms, not
                # librdkafka's 1 s: with a short queue that pause, not the broker, bounded a
                # catch-up (8 MB queue: 40 k records/s with the default, 400 k with this,
                # 4 MB as fast).
                "fetch.queue.backoff.ms": 10,
            })

    def buffers(self, peers: Peers | None = None) -> AlignedBuffers:
        slack = self.options.horizon / 2
        peer_slack = self.options.horizon * PEER_SLACK
        return AlignedBuffers(slack_ms=int(slack / timedelta(milliseconds=1)),
                              peer_slack_ms=int(peer_slack / timedelta(milliseconds=1)),
                              capacity=max(2_000, self.options.batch_max_records // 4),
                              stall_s=STALL_LIMIT_S, peers=peers)

    def run(self) -> StreamSummary:
        started = time.monotonic()
        sink: HotSink | None = None
        try:
            dsn = prepare_db(self.settings, self.stop)
            sink = HotSink(dsn, self.topic, self.options, self.stop, self.summary,
                           self.on_commit)
            sink.connect()
            log.info("stream worker started: topic %s, %s, horizon %s, batches of up to "
                     "%d records / %d ms", self.topic,
                     "partitions assigned directly" if self.options.partitions is not None
                     else f"consumer group {self.options.group_id}",
                     self.options.horizon, self.options.batch_max_records,
                     self.options.batch_max_ms)
            loop = ExactlyOnceConsumer(self.settings, self.consumer_options(), sink,
                                       self.buffers(sink.exchange_progress), stop=self.stop,
                                       on_tick=self._progress,
                                       metrics=self.metrics)
            stats = loop.run()
            self.summary.stopped = stats.stopped
            self.summary.fenced_batches = stats.fenced
            self.summary.log_resets = stats.log_resets
        except Stopped:
            self.summary.stopped = "stop"
        finally:
            if sink is not None:
                sink.close()
            self.summary.seconds = round(time.monotonic() - started, 3)
        return self.summary

    def _progress(self, loop: ExactlyOnceConsumer) -> None:
        self.summary.fenced_batches = loop.stats.fenced
        self.summary.log_resets = loop.stats.log_resets
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY_S:
            return
        records = self.summary.records - self._progress_records
        if records or loop.ever_assigned:
            log.info("stream: %s records in the last %.0f s (%.0f/s); %s new clicks in total; "
                     "clock %s; partitions %s", f"{records:,}", now - self._progress_at,
                     records / (now - self._progress_at), f"{self.summary.new:,}",
                     self.summary.clock or "-",
                     ", ".join(f"{p}@{o}" for p, o in sorted(loop.expected.items())) or "none")
        self._progress_at, self._progress_records = now, self.summary.records


def run_stream(
    settings: Settings,
    until_idle: float | None = None,
    *,
    options: StreamOptions | None = None,
    stop: threading.Event | None = None,
    on_commit: Callable[[BatchReport], None] | None = None,
    metrics: Any = None,
) -> StreamSummary:
    """Run the hot-path worker until `stop` is set, or until no record arrived for
    `until_idle` seconds. Returns what it did (`summary.line()` is the one-line summary).
    `metrics`: a `tripflow.observability.metrics.WorkerMetrics` to feed."""
    bound_process_memory(STREAM_MMAP_THRESHOLD)
    return StreamWorker(settings, until_idle=until_idle, options=options, stop=stop,
                        on_commit=on_commit, metrics=metrics).run()


__all__ = [
    "BatchReport",
    "HotOptions",
    "HotStatus",
    "PartitionStatus",
    "StreamOptions",
    "StreamSummary",
    "StreamWorker",
    "fingerprint",
    "hot_status",
    "parse_partitions",
    "run_stream",
]
