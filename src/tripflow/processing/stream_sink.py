"""The hot store as a sink of the exactly-once consumer loop (`tripflow.messaging.consumer`).

- positions: the offsets and fingerprints stored in `tripflow.hot_offsets` (registering the
  partitions' rows), read on the main thread's own connection;
- prepare (main thread, while the previous batch commits): the one parser
  (`records.parser.parse_batch`, "read time" = each record's Kafka timestamp, like the
  batch path), a slice at a time, keeping only the columns the hot store reads;
- write (the loop's writer thread): `HotStore.commit_batch`, clicks, quarantine, offsets
  (fenced on the expected ones) and mart refresh in one PostgreSQL transaction, then
  pruning when due;
- written (main thread): counts, the on_commit callback, memory given back.

PostgreSQL unreachable or restarted: the batch's transaction is lost or its outcome is
unknown; the sink reconnects with backoff and retries the same batch (the fence tells
whether it was committed already).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from tripflow import db
from tripflow.memory import malloc_trim
from tripflow.messaging.sink import Batch, SinkBase, Stopped, Stored, Written
from tripflow.processing.hotstore import (
    HOT_COLUMNS,
    CommitResult,
    HotStore,
    _iso,
    stage_csv,
)
from tripflow.records.parser import ParseResult, parse_batch, release_memory
from tripflow.settings import Settings

if TYPE_CHECKING:
    from tripflow.processing.stream import BatchReport, StreamOptions, StreamSummary

log = logging.getLogger("tripflow.stream")

# Records per parser call (see prepare). A call costs ~10 ms of DuckDB planning whatever
# its size (parse CPU per record, one core: 6.4 µs in calls of 4,096, 3.8 µs in calls of
# 15,000), so a whole batch (StreamOptions.batch_max_records) is one call; parsing it
# whole needs ~10 MB more at its peak than in slices of 4,096.
PARSE_SLICE = 20_000
_MAX_BACKOFF_S = 10.0
# Event-time progress published by a worker that has not refreshed it for this long (it
# stopped, hangs, or lost the partition) no longer holds the others back.
PEER_FRESH_S = 5.0


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def prepare_db(settings: Settings, stop: threading.Event) -> str:
    """Migrate and connect, waiting for PostgreSQL with backoff."""
    delay, attempts = 0.5, 0
    while True:
        if stop.is_set():
            raise Stopped
        try:
            return db.prepare(settings)
        except psycopg.OperationalError as err:
            log.warning("PostgreSQL unreachable (%s); retrying in %.1f s",
                        first_line(err), delay)
        except psycopg.errors.InternalError as err:
            # Workers starting together race on `alter role` in db.prepare ("tuple
            # concurrently updated"): harmless, try again.
            attempts += 1
            if attempts > 5:
                raise
            log.info("preparing the database: %s; retrying", first_line(err))
        stop.wait(delay)
        delay = min(delay * 2, _MAX_BACKOFF_S)


def with_db(store: HotStore, what: str, action: Callable[[HotStore], Any],
            stop: threading.Event) -> Any:
    """Run `action(store)`, reconnecting with backoff while PostgreSQL is unreachable."""
    delay, down_since, attempts = 0.5, None, 0
    while True:
        if stop.is_set():
            raise Stopped
        try:
            result = action(store)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            attempts += 1
            if not store.broken() and attempts <= 5:
                # deadlock, serialization failure, lock timeout: retry at once
                log.warning("%s: %s; retrying", what, first_line(err))
                continue
            store.reset()
            down_since = down_since or time.monotonic()
            log.warning("PostgreSQL unreachable during %s (%s); retrying in %.1f s",
                        what, first_line(err), delay)
            stop.wait(delay)
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


class HotSink(SinkBase):
    holder = "the hot store"

    def __init__(self, dsn: str, topic: str, options: StreamOptions, stop: threading.Event,
                 summary: StreamSummary,
                 on_commit: Callable[[BatchReport], None] | None = None) -> None:
        hot = options.hot_options()
        self.topic = topic
        self.stop = stop
        self.summary = summary
        self.on_commit = on_commit
        self.store = HotStore(dsn, topic, hot)  # the writer thread's connection
        self.control = HotStore(dsn, topic, hot)  # the main thread's (positions, progress)
        self._progress_retry_at = 0.0

    def connect(self) -> None:
        with_db(self.store, "connecting", lambda store: store.conn, self.stop)

    def close(self) -> None:
        for store in (self.store, self.control):
            store.close()

    def stored_positions(self, partitions: list[int]) -> dict[int, Stored]:
        stored = with_db(self.control, "reading stored offsets",
                         lambda s: s.register(partitions), self.stop)
        return {p: Stored(offset, fp) for p, (offset, fp) in stored.items()}

    def exchange_progress(self, own: dict[int, tuple[int | None, bool]]
                          ) -> dict[int, int | None]:
        """Event-time progress with the other workers (alignment.Peers). Advisory: while
        PostgreSQL fails, no peer holds anything back (retried after a while)."""
        if time.monotonic() < self._progress_retry_at:
            return {}
        try:
            return self.control.exchange_progress(own, PEER_FRESH_S)
        except psycopg.Error as err:
            self.control.reset()
            self._progress_retry_at = time.monotonic() + _MAX_BACKOFF_S
            log.warning("cannot exchange event-time progress with other workers (%s); "
                        "aligning on this worker's partitions only for %.0f s",
                        first_line(err), _MAX_BACKOFF_S)
            return {}

    def log_replaced(self, partition: int, why: str) -> None:
        log.error("!!! partition %d of %s: %s. The broker's log was replaced (an embedded "
                  "broker forgets everything on restart). Reading partition %d from the start "
                  "of the new log; records already stored are recognised as duplicates.",
                  partition, self.topic, why, partition)

    def prepare(self, batch: Batch) -> None:
        """Parse the batch (main thread) and let its raw records go."""
        records = batch.rows
        n = records.num_rows
        values = records["value"]
        context = pa.table({
            "topic": pa.repeat(pa.scalar(self.topic), n),
            "partition": records["partition"],
            "offset": records["offset"],
        })
        stamps = records["timestamp"]
        read_at = pc.if_else(pc.greater(stamps, 0), stamps, pa.scalar(None, pa.int64()))
        # Parsed in one call up to PARSE_SLICE records (the parser's working memory grows
        # with its input); a batch stays one commit. Clicks keep only what the hot store
        # reads.
        slices = [parse_batch(values.slice(i, PARSE_SLICE), context=context.slice(i, PARSE_SLICE),
                              read_ms=read_at.slice(i, PARSE_SLICE))
                  for i in range(0, n, PARSE_SLICE)]
        parsed = ParseResult(
            pa.concat_tables([part.clicks.select(HOT_COLUMNS) for part in slices]),
            pa.concat_tables([part.quarantine for part in slices]),
            sum(part.nul_removed for part in slices))
        # The COPY payload too, here rather than on the writer thread (the bottleneck).
        batch.prepared = (parsed, stage_csv(parsed.clicks))
        del slices, records, values, context, stamps, read_at, parsed
        batch.release_rows()
        release_memory()

    def write(self, batch: Batch) -> Written:
        """The writer thread: one transaction per batch, then pruning when due."""
        store = self.store
        parsed, staged = batch.prepared
        result: CommitResult = with_db(store, "committing a batch", lambda s: s.commit_batch(
            parsed, records=batch.records, ends=batch.ends, expected=batch.expected,
            staged=staged), self.stop)
        committed_at = time.time()
        if result.committed and store.prune_due():
            try:
                with_db(store, "pruning the hot store", lambda s: s.prune(), self.stop)
            except psycopg.Error as err:  # e.g. lock timeout: the next batch tries again
                log.warning("pruning the hot store failed (%s); will retry", first_line(err))
        return Written(result.committed, result.stored, (result, committed_at))

    def written(self, batch: Batch, written: Written) -> None:
        from tripflow.processing.stream import BatchReport

        result, committed_at = written.detail
        self.summary.add(result.counts)
        self.summary.clock = _iso(result.clock)
        if batch.records >= 1000:
            malloc_trim()
        timings = {"parse": batch.prepare_ms, **result.timings_ms}
        if self.on_commit is not None:
            self.on_commit(BatchReport(committed_at,
                                       {p: e.next_offset for p, e in batch.ends.items()},
                                       result.counts, result.clock, timings))
        log.debug("batch of %d records: %s new, %s dup, %s late, %s bad; clock %s; ms %s",
                  batch.records, result.counts.new, result.counts.duplicates,
                  result.counts.late, result.counts.quarantined, _iso(result.clock), timings)
