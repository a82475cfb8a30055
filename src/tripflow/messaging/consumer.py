"""The one exactly-once Kafka consumer loop; bronze and the hot path are its sinks.

Exactly once comes from the sink (see `tripflow.messaging.sink`): it stores each batch
together with where the batch leaves each partition, atomically, and the loop always
resumes from those stored positions (on start, after every rebalance, after a fenced
write, after a broker outage), never from Kafka's committed offsets. Kafka offsets are
committed only as a hint for lag monitoring (`commit_hint`).

The loop:
- joins a consumer group (`partitions=None`) or assigns partitions directly (`()` = all);
- on assignment: finishes the writes in flight, asks the sink for its positions, seeks to
  them; where a fingerprint is stored it seeks one record earlier and compares that record
  with it (`tripflow.messaging.verify`): a replaced log is read from its start;
- fetches `fetch_slice` records per consume call and turns them into Arrow rows at once
  (the messages pin librdkafka's decompressed fetch responses), into `Buffers`;
- closes a batch `batch_max_s` after its first record arrived, when nothing more can
  arrive now (every partition paused or at its end), and optionally when full or when a
  fetch comes back empty; the buffers release it (in event-time order for the hot path);
- hands it to the sink's `prepare` (main thread) and then to one writer thread, at most
  `max_inflight` batches at a time, so reading and parsing overlap with writing; results
  are accounted for on the main thread in order (a fenced write: positions re-read);
- stops when `stop` is set (signals: `tripflow.messaging.control.stop_on_signals`) or,
  with `until_idle`, when no record arrived for that long ("done": a broker's high
  watermark is never trusted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from tripflow.messaging.buffers import Buffers, FifoBuffers
from tripflow.messaging.config import auth_failure, consumer_config
from tripflow.messaging.control import parse_partitions, stop_on_signals
from tripflow.messaging.sink import (
    RECORD_SCHEMA,
    Batch,
    PartitionEnd,
    Sink,
    Stopped,
    Stored,
    Written,
    fingerprint,
)
from tripflow.messaging.verify import LogVerifier
from tripflow.messaging.writer import Writer
from tripflow.settings import Settings

log = logging.getLogger("tripflow.consumer")

_BROKER_DOWN = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
             KafkaError._UNKNOWN_PARTITION}
_OUT_OF_RANGE = {KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET}
# A partition fetched without result for this long (time spent in consume calls while it
# is not paused) counts as read to its end. (librdkafka's partition-EOF event says so at
# once, but only when the broker's high watermark is exact: the embedded broker's lags
# the true end, so the event may never come.)
QUIET_S = 2.0

__all__ = ["Batch", "ConsumerError", "ConsumerOptions", "ExactlyOnceConsumer", "Stopped",
           "Stored", "Written", "parse_partitions", "stop_on_signals"]


class ConsumerError(RuntimeError):
    """The loop cannot go on; the message says what to do."""


@dataclass(frozen=True)
class ConsumerOptions:
    group_id: str
    partitions: tuple[int, ...] | None = None  # None: the group; (): every partition
    until_idle: float | None = None
    batch_max_records: int = 15_000
    batch_max_s: float = 0.3  # after the batch's first record arrived
    fetch_slice: int = 2_000  # records per consume call
    poll_s: float = 0.05  # longest consume wait: a batch closes close to its deadline
    wait_s: float = 0.5  # a collect in which nothing arrives ends after this
    close_when_full: bool = False  # close at batch_max_records buffered
    close_when_quiet: bool = False  # close when a fetch brings nothing
    max_inflight: int = 1  # batches handed to the writer and not yet accounted for
    missing_topic: str = "wait"  # or "error"
    join_grace_s: float = 15.0  # until_idle: idle unassigned after max(until_idle, this)
    join_timeout_s: float | None = None  # error when nothing was assigned for this long
    check_timeout_s: float = 3.0  # a record to verify that has not come: ask the log end
    check_limit_s: float | None = None  # error when a position stays unverified this long
    commit_hint: bool = False  # commit written positions to Kafka (lag monitoring only)
    config: dict[str, Any] = field(default_factory=dict)  # librdkafka overrides
    error: type[Exception] = ConsumerError
    writer_name: str = "tripflow-writer"


@dataclass
class ConsumerStats:
    records: int = 0  # records taken into batches' buffers
    batches: int = 0  # written
    fenced: int = 0  # writes refused by the sink's fence (positions re-read)
    log_resets: int = 0  # partitions read from the start of a replaced log
    first_record_at: float | None = None  # monotonic
    last_write_at: float | None = None
    stopped: str = ""  # "idle" or "stop"
    seconds: float = 0.0


class ExactlyOnceConsumer:
    """One consumer and its sink (see the module docstring). Not thread-safe: run() on
    one thread; the writer thread only runs `sink.write`."""

    def __init__(self, settings: Settings, options: ConsumerOptions, sink: Sink,
                 buffers: Buffers | None = None, *, stop: threading.Event | None = None,
                 on_tick: Callable[[ExactlyOnceConsumer], None] | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
                 metrics: Any = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.options = options
        self.sink = sink
        self.buffers: Buffers = buffers if buffers is not None else FifoBuffers()
        self.stop = stop or threading.Event()
        self.on_tick = on_tick
        self.consumer_factory = consumer_factory
        self.metrics = metrics  # observability.metrics.WorkerMetrics: tick() and written()
        self.stats = ConsumerStats()
        self.expected: dict[int, int | None] = {}  # assigned partition -> stored offset
        self.replaced: set[int] = set()  # read from a new log's start, not written yet
        self.verify = LogVerifier(self)
        self.pending_seeks: dict[int, int] = {}
        self.paused: set[int] = set()
        self.at_eof: set[int] = set()  # whose last fetch found nothing more
        # Seconds spent fetching (inside consume calls, not paused) since the partition's
        # last record, assignment, seek or resume.
        self.quiet_for: dict[int, float] = {}
        self.next_fetch: dict[int, int] = {}  # offset after the last record fetched
        self.high_hint: dict[int, int] = {}  # high watermark read at assignment
        self.to_commit: dict[int, int] = {}  # written next offsets, for commit_hint
        self.writer = Writer(sink, options.max_inflight, options.writer_name)
        self.generation = 0  # bumped when positions are reset: older batches go
        self.consumer: Any = None
        self.bootstrap = ""
        self.started = time.monotonic()
        self.last_activity = self.started
        self.ever_assigned = False
        self.had_partitions = False  # ever assigned at least one partition
        self.broker_down_since: float | None = None
        self.reverify = False  # after a broker outage: re-check the assigned partitions
        self._last_warning: dict[str, float] = {}

    def warn_every(self, key: str, seconds: float, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -1e9) >= seconds:
            self._last_warning[key] = now
            log.warning(message, *args)

    # -- the run ------------------------------------------------------------------------

    def run(self) -> ConsumerStats:
        self.started = self.last_activity = time.monotonic()
        manual = self.options.partitions is not None
        try:
            self.consumer = self._make_consumer()
            if self.options.missing_topic == "error":
                self._topic_partitions(required=True)
            if not manual:
                self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                        on_revoke=self._on_revoke, on_lost=self._on_revoke)
            self.stats.stopped = self._loop(manual)
            self._account(drain=True)  # a clean stop writes what is in flight
        except Stopped:
            self.stats.stopped = "stop"
        finally:
            self.writer.shutdown()
            if self.consumer is not None:
                try:
                    self._commit_hint()
                    self.consumer.close()
                except (KafkaException, RuntimeError) as err:
                    log.warning("closing the consumer: %s", err)
            self.stats.seconds = round(time.monotonic() - self.started, 3)
        return self.stats

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
                    self.seek(p, offset)
                else:
                    del self.pending_seeks[p]
            released = self._collect()
            batch = self._batch(released) if released else None
            del released  # prepared: not kept while the next batch is collected
            self._account(room=batch is not None)
            if batch is not None and batch.generation == self.generation:
                self.writer.submit(batch)
            self.verify.expire()
            self._commit_hint()
            if self.on_tick is not None:
                self.on_tick(self)
            if self.metrics is not None:
                self.metrics.tick(self)
            self._check_joined()
            if batch is None and self.writer.idle() and self._idle():
                return "idle"
        return "stop"

    def _idle(self) -> bool:
        until_idle = self.options.until_idle
        if until_idle is None:
            return False
        now = time.monotonic()
        if not self.ever_assigned and now - self.started < max(until_idle,
                                                               self.options.join_grace_s):
            return False
        return (now - self.last_activity >= until_idle and not self.verify.checks
                and not self.buffers.size())

    def _check_joined(self) -> None:
        timeout = self.options.join_timeout_s
        if timeout is not None and not self.had_partitions and \
                time.monotonic() - self.started > timeout:
            raise self.options.error(
                f"no partition of topic {self.topic!r} was assigned to this consumer in "
                f"{timeout:.0f} s: is the broker healthy, or do other "
                f"{self.options.group_id!r} consumers hold every partition?")

    # -- Kafka --------------------------------------------------------------------------

    def _make_consumer(self) -> Any:
        config = consumer_config(self.settings, self.options.group_id, **{
            "error_cb": self._on_kafka_error,
            # Tells when a partition is read to its end (batches close, alignment).
            "enable.partition.eof": True,
            **self.options.config,
        })
        self.bootstrap = str(config["bootstrap.servers"])
        return self.consumer_factory(config)

    def _on_kafka_error(self, err: KafkaError) -> None:
        code = err.code()
        if code in _BROKER_DOWN:
            if self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
            self.reverify = True
            self.warn_every("broker", 10.0, "broker unreachable at %s (%s); the Kafka client "
                            "retries with backoff", self.bootstrap, err.str())
        elif code == KafkaError._AUTHENTICATION:  # retrying cannot help: say it at once
            raise self.options.error(auth_failure(self.settings, err.str()))
        elif err.fatal():
            raise KafkaException(err)
        else:
            self.warn_every(f"kafka-{code}", 10.0, "Kafka: %s", err.str())

    def _list_topic(self, timeout: float) -> Any:
        """The topic's metadata, asked in 1 s rounds; before any assignment the client's
        callbacks are served between rounds, so refused credentials raise at once
        (`_on_kafka_error`) instead of after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return self.consumer.list_topics(self.topic, timeout=max(0.1, min(1.0, left)))
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                if not self.consumer.assignment():  # no record can come: nothing is lost
                    self.consumer.poll(0)

    def _topic_partitions(self, required: bool) -> list[int] | None:
        """The topic's partitions; None while it does not exist (an error if required)."""
        try:
            metadata = self._list_topic(15 if required else 5)
        except KafkaException as err:
            if required:
                raise
            self.warn_every("metadata", 10.0, "cannot read metadata of %s: %s", self.topic,
                            err.args[0].str())
            return None
        topic = metadata.topics.get(self.topic)
        if topic is None or (topic.error is not None and topic.error.code() in _NO_TOPIC) \
                or not topic.partitions:
            if required:
                raise self.options.error(
                    f"topic {self.topic!r} does not exist: produce records first "
                    f"(`tripflow produce PATH`) or check TRIPFLOW_TOPIC")
            self.warn_every("no-topic", 10.0, "topic %s does not exist (yet); waiting",
                            self.topic)
            return None
        if topic.error is not None:
            return None
        return sorted(topic.partitions)

    def _assign_manual(self) -> bool:
        """Direct assignment (no group). False while the topic does not exist."""
        available = self._topic_partitions(self.options.missing_topic == "error")
        if available is None:
            return False
        wanted = list(self.options.partitions or available)
        missing = set(wanted) - set(available)
        if missing and self.options.missing_topic == "error":
            raise self.options.error(f"topic {self.topic!r} has no partition "
                                     f"{sorted(missing)} (it has {available})")
        self._assign(self.consumer, [TopicPartition(self.topic, p) for p in wanted])
        return True

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            self._assign(consumer, partitions)
        except Stopped:
            consumer.assign(partitions)

    def _assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._account(drain=True)  # writes in flight first: the positions read are the latest
        stored = self.sink.stored_positions([tp.partition for tp in partitions])
        now = time.monotonic()
        resume = []
        for tp in partitions:
            p = tp.partition
            offset = stored.get(p, Stored(None)).next_offset
            self.forget(p)
            self.expected[p] = offset
            self.replaced.discard(p)
            tp.offset = self.verify.start(p, stored.get(p, Stored(None)), now)
            self.next_fetch[p] = max(tp.offset, 0)
            resume.append(f"{p}@{'start' if offset is None else offset}")
        consumer.assign(partitions)
        for tp in partitions:
            try:
                self.high_hint[tp.partition] = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=2, cached=False)[1]
            except KafkaException:
                self.high_hint.pop(tp.partition, None)
        self.ever_assigned = True
        self.had_partitions = self.had_partitions or bool(partitions)
        self.last_activity = now
        log.info("assigned partitions of %s: %s", self.topic, ", ".join(resume) or "none")

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Records buffered for lost partitions are dropped, not written: whoever owns them
        # next resumes from the sink's positions. Writes in flight finish first, so the
        # next owner sees their positions.
        for tp in partitions:
            self.expected.pop(tp.partition, None)
            self.verify.drop(tp.partition)
            self.replaced.discard(tp.partition)
            self.forget(tp.partition)
        self._account(drain=True)
        self._commit_hint()
        if partitions:
            log.info("partitions revoked: %s", ", ".join(str(tp.partition) for tp in partitions))
        consumer.unassign()

    def _reverify(self) -> None:
        """After a broker outage: check that each assigned partition's log is still ours."""
        if self._topic_partitions(required=False) is None:
            return
        self.reverify = False
        if self.broker_down_since is not None:
            log.info("broker reachable again after %.1f s",
                     time.monotonic() - self.broker_down_since)
            self.broker_down_since = None
        if not self.expected:
            return
        self._account(drain=True)
        assigned = self._reread_positions()
        log.info("re-checking partitions %s of %s after the broker outage",
                 ", ".join(map(str, assigned)), self.topic)

    def _reread_positions(self) -> list[int]:
        """Seek every assigned partition to the sink's position (verifying it again)."""
        assigned = sorted(self.expected)
        if not assigned:
            return assigned
        stored = self.sink.stored_positions(assigned)
        now = time.monotonic()
        for p in assigned:
            position = stored.get(p, Stored(None))
            self.expected[p] = position.next_offset
            self.replaced.discard(p)
            self.seek(p, self.verify.start(p, position, now))
        return assigned

    def seek(self, partition: int, offset: int) -> None:
        self.forget(partition)  # what is buffered came from the old position
        self.last_activity = time.monotonic()  # records to come: not idle yet
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

    def log_replaced(self, partition: int, why: str) -> None:
        self.replaced.add(partition)
        self.stats.log_resets += 1
        self.sink.log_replaced(partition, why)

    def _commit_hint(self) -> None:
        """Commit written positions to Kafka, as a hint only (lag monitoring, other tools),
        on the consuming thread (a commit from another thread waits for consume())."""
        done, self.to_commit = self.to_commit, {}
        mine = {p: v for p, v in done.items() if p in self.expected}
        if mine and self.options.commit_hint:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, v)
                                          for p, v in mine.items()], asynchronous=True)

    # -- fetching -----------------------------------------------------------------------

    def _collect(self) -> list[pa.Table]:
        """The next batch's records (see the module docstring for when it closes)."""
        opts = self.options
        start = time.monotonic()
        deadline: float | None = None
        polled = False
        while not self.stop.is_set():
            now = time.monotonic()
            timeout = opts.wait_s - (now - start) if deadline is None else deadline - now
            size = self.buffers.size()
            if timeout <= 0 or (size and all(
                    p in self.paused or p in self.at_eof for p in self.expected)):
                if not polled:
                    # Serve the client once all the same (rebalances, errors, the poll
                    # interval): a worker whose records wait for other workers' partitions
                    # comes here at once, again and again.
                    self._accept(self.consumer.consume(num_messages=opts.fetch_slice,
                                                       timeout=0))
                break  # due, or records wait and nothing more can arrive now
            room = opts.fetch_slice
            if opts.close_when_full:
                if size >= opts.batch_max_records:
                    break
                room = max(1, min(room, opts.batch_max_records - size))
            fetching = time.monotonic()
            # consume() waits for its whole timeout unless it fills num_messages: short
            # slices, so a batch closes right at its deadline.
            got = self.consumer.consume(num_messages=room, timeout=min(timeout, opts.poll_s))
            polled = True
            fetching = time.monotonic() - fetching
            for p in self.expected:
                if p not in self.paused:
                    self.quiet_for[p] = self.quiet_for.get(p, 0.0) + fetching
            arrived = self._accept(got)
            del got  # copied: let librdkafka free the messages before the next fetch
            if arrived and deadline is None:
                deadline = time.monotonic() + opts.batch_max_s
            if opts.close_when_quiet and not arrived and self.buffers.size():
                break  # caught up: write what we have, so the sink stays fresh
        released = self.buffers.release(
            opts.batch_max_records, partitions=list(self.expected),
            may_have_more=self._may_have_more, now=time.monotonic())
        for p in list(self.paused):
            if self.buffers.size(p) <= self.buffers.capacity // 2:
                self._pause(p, False)
        return released

    def _accept(self, got: list[Message]) -> int:
        """Fetched messages into the buffers as Arrow rows; returns how many arrived."""
        msgs = got
        if any(map(Message.error, msgs)):
            msgs = [m for m in msgs if m.error() is None or self._on_message_error(m)]
        arrived = len(msgs)
        if not arrived:
            return 0
        if self.verify.active() or self.pending_seeks or not set(
                map(Message.partition, msgs)) <= self.expected.keys():
            msgs = [m for m in msgs if self._wanted(m)]  # the rare cases
        n = len(msgs)
        if n:
            self._buffer(msgs, n)
        self.last_activity = time.monotonic()
        if self.broker_down_since is not None and not self.reverify:
            self.broker_down_since = None
        return arrived

    def _buffer(self, msgs: list[Message], n: int) -> None:
        # map() over the C methods: the per-record cost that bounds throughput.
        partitions = np.fromiter(map(Message.partition, msgs), np.int32, n)
        offsets = np.fromiter(map(Message.offset, msgs), np.int64, n)
        stamps = np.fromiter(map(itemgetter(1), map(Message.timestamp, msgs)), np.int64, n)
        rows = pa.Table.from_arrays(
            [pa.array(list(map(Message.value, msgs)), pa.binary()),
             pa.array(partitions, pa.int32()),
             pa.array(offsets, pa.int64()), pa.array(stamps, pa.int64()),
             pa.array(list(map(Message.key, msgs)), pa.binary())], schema=RECORD_SCHEMA)
        for p in np.unique(partitions).tolist():
            self.next_fetch[p] = int(offsets[partitions == p].max()) + 1
            self.at_eof.discard(p)
            self.quiet_for[p] = 0.0
        self.buffers.add(rows)
        for p in np.unique(partitions).tolist():
            if p not in self.paused and self.buffers.full(p):
                self._pause(p, True)
        if self.stats.first_record_at is None:
            self.stats.first_record_at = time.monotonic()
        self.stats.records += n

    def _wanted(self, msg: Message) -> bool:
        p = msg.partition()
        if p not in self.expected:
            return False  # revoked meanwhile
        self.next_fetch[p] = msg.offset() + 1
        if p in self.pending_seeks:
            return False  # to be re-read from elsewhere
        return self.verify.wanted(msg, p)

    def _on_message_error(self, msg: Message) -> bool:
        """Handle an error event among the messages; always False (not a record)."""
        err = msg.error()
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            self.at_eof.add(msg.partition())
        elif err.fatal():
            raise self.options.error(f"Kafka error: {err.str()}")
        elif code in _NO_TOPIC:
            self.reverify = True
            self.warn_every("no-topic", 10.0, "topic %s not available (%s); waiting",
                            self.topic, err.str())
        elif code in _OUT_OF_RANGE:
            log.error("!!! partition %s of %s: offset out of range (%s); the broker's log no "
                      "longer holds the stored position, reading from its start",
                      msg.partition(), self.topic, err.str())
        elif code in _BROKER_DOWN:
            self._on_kafka_error(err)
        else:
            self.warn_every(f"msg-{code}", 10.0, "Kafka: %s", err.str())
        return False

    def _pause(self, partition: int, pause: bool) -> None:
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
        # Below the high watermark there are records for sure (the embedded broker's lags
        # the true end by one produced batch at most, so this is a lower bound).
        try:
            high = self.consumer.get_watermark_offsets(
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

    def forget(self, partition: int) -> None:
        """Drop what is buffered for a partition (revoked, or about to be re-read)."""
        self.buffers.drop(partition)
        if partition in self.paused:
            self._pause(partition, False)
            self.paused.discard(partition)

    # -- batches ------------------------------------------------------------------------

    def _batch(self, released: list[pa.Table]) -> Batch:
        """Released records as a batch, prepared by the sink (main thread)."""
        started = time.perf_counter()
        rows = released[0] if len(released) == 1 else pa.concat_tables(released)
        partitions = rows["partition"].to_numpy()
        ends: dict[int, PartitionEnd] = {}
        for p in np.unique(partitions).tolist():
            last = rows.slice(int(np.flatnonzero(partitions == p)[-1]), 1).to_pylist()[0]
            ends[p] = PartitionEnd(last["offset"] + 1, fingerprint(
                last["timestamp"], last["key"], last["value"]))
        batch = Batch(rows, ends, {p: self.expected.get(p) for p in ends},
                      frozenset(self.replaced & ends.keys()), self.generation)
        self.replaced -= ends.keys()
        # Optimistic: the next batch expects this one to be written (if it is not, the
        # positions are reset and the next batch, prepared meanwhile, is dropped).
        for p, end in ends.items():
            self.expected[p] = end.next_offset
        del rows, released
        self.sink.prepare(batch)
        batch.prepare_ms = round((time.perf_counter() - started) * 1000, 2)
        return batch

    def _account(self, *, drain: bool = False, room: bool = False) -> None:
        """Account for finished writes, in order: all of them (`drain`), enough to submit
        one more (`room`), else those already done."""
        for batch, result in self.writer.finished(drain=drain, room=room):
            self._written(batch, result)

    def _written(self, batch: Batch, result: Written) -> None:
        if not result.committed:
            self.stats.fenced += 1
            changed = {p: (batch.expected.get(p), stored) for p, stored in result.stored.items()
                       if stored != batch.expected.get(p)}
            log.warning("batch not committed: stored offsets moved (partition: expected → "
                        "stored) %s — another worker, or a commit whose reply was lost, "
                        "stored them; re-reading from the stored offsets", changed)
            self.generation += 1
            self._reread_positions()
            return
        self.stats.batches += 1
        self.stats.last_write_at = time.monotonic()
        written = {p: e.next_offset for p, e in batch.ends.items()}
        self.to_commit.update(written)
        self.buffers.written(written)
        self.sink.written(batch, result)
        if self.metrics is not None:
            self.metrics.written(batch)

