"""The exactly-once consumer loop without a broker: a fake consumer serves in-memory logs,
a sink in memory stores batches with their positions. (The real sinks, bronze and the hot
store, are tested against the real broker and database in tests/processing.)"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from tripflow.messaging.consumer import (
    ConsumerError,
    ConsumerOptions,
    ExactlyOnceConsumer,
    parse_partitions,
    stop_on_signals,
)
from tripflow.messaging.sink import Batch, SinkBase, Stored, Written, fingerprint
from tripflow.settings import Settings

TOPIC = "fake"


def record(p: int, i: int, tag: str = "a") -> tuple[int, bytes, bytes]:
    return (1_000 + i, f"k{p}".encode(), f"{tag}-{p}-{i}".encode())


class FakeConsumer:
    """What the loop uses of confluent_kafka.Consumer, over in-memory partition logs;
    `auto.offset.reset=earliest` (a position beyond the end starts again at 0)."""

    def __init__(self, logs: dict[int, list[tuple[int, bytes, bytes]]],
                 on_consume: Any = None) -> None:
        self.logs = logs
        self.position: dict[int, int] = {}
        self.eof_sent: set[int] = set()
        self.callbacks: dict[str, Any] | None = None
        self.joined = False
        self.on_consume = on_consume
        self.committed: dict[int, int] = {}
        self.closed = False

    # group / assignment
    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._seek(tp.partition, tp.offset)

    def unassign(self) -> None:
        self.position.clear()

    def seek(self, tp: TopicPartition) -> None:
        self._seek(tp.partition, tp.offset)

    def _seek(self, p: int, offset: int) -> None:
        start = 0 if offset in (OFFSET_BEGINNING, -1001) else offset
        self.position[p] = 0 if start > len(self.logs[p]) else start
        self.eof_sent.discard(p)

    def pause(self, tps: list[TopicPartition]) -> None:
        pass

    def resume(self, tps: list[TopicPartition]) -> None:
        pass

    # reading
    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self.on_consume is not None:
            self.on_consume(self)
        if self.callbacks is not None and not self.joined:
            self.joined = True
            self.callbacks["on_assign"](self, [TopicPartition(TOPIC, p) for p in self.logs])
        out: list[Message] = []
        for p in sorted(self.position):
            log = self.logs[p]
            while self.position[p] < len(log) and len(out) < num_messages:
                ts, key, value = log[self.position[p]]
                out.append(Message(topic=TOPIC, partition=p, offset=self.position[p],
                                   key=key, value=value, timestamp=(1, ts)))
                self.position[p] += 1
            if self.position[p] >= len(log) and p not in self.eof_sent:
                self.eof_sent.add(p)
                out.append(Message(topic=TOPIC, partition=p, offset=self.position[p],
                                   error=KafkaError(KafkaError._PARTITION_EOF)))
        return out

    def list_topics(self, topic: str, timeout: float) -> Any:
        if not self.logs:
            return SimpleNamespace(topics={})
        return SimpleNamespace(topics={TOPIC: SimpleNamespace(
            error=None, partitions={p: None for p in self.logs})})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0,
                              cached: bool = False) -> tuple[int, int]:
        return 0, len(self.logs[tp.partition])

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed.update({tp.partition: tp.offset for tp in offsets})

    def close(self) -> None:
        self.closed = True


@dataclass
class MemorySink(SinkBase):
    """Stores values and positions per partition; fenced on the expected positions."""

    holder: str = "memory"
    values: dict[int, list[bytes]] = field(default_factory=dict)
    positions: dict[int, Stored] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    replaced: list[tuple[int, str]] = field(default_factory=list)
    fail_at: int | None = None  # the write number that raises
    writes: int = 0

    def stored_positions(self, partitions: list[int]) -> dict[int, Stored]:
        return {p: self.positions.get(p, Stored(None)) for p in partitions}

    def write(self, batch: Batch) -> Written:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError("disk full")
        stored = {p: self.positions.get(p, Stored(None)).next_offset for p in batch.ends}
        if any(stored[p] != batch.expected.get(p) for p in batch.ends):
            return Written(committed=False, stored=stored)
        for value, p in zip(batch.rows["value"].to_pylist(),
                            batch.rows["partition"].to_pylist(), strict=True):
            self.values.setdefault(p, []).append(value)
        for p, end in batch.ends.items():
            self.positions[p] = Stored(end.next_offset, end.fingerprint)
        self.batches.append(batch)
        return Written()

    def log_replaced(self, partition: int, why: str) -> None:
        self.replaced.append((partition, why))


def run(logs: dict[int, list[tuple[int, bytes, bytes]]], sink: MemorySink,
        on_consume: Any = None, **options: Any) -> tuple[ExactlyOnceConsumer, FakeConsumer]:
    fake = FakeConsumer(logs, on_consume)
    defaults: dict[str, Any] = {"group_id": "g", "partitions": (), "until_idle": 0.2,
                                "batch_max_records": 7, "batch_max_s": 0.01,
                                "wait_s": 0.05, "poll_s": 0.01, "join_grace_s": 0.5}
    loop = ExactlyOnceConsumer(
        Settings(topic=TOPIC, kafka_bootstrap="fake:9092"),
        ConsumerOptions(**{**defaults, **options}), sink, consumer_factory=lambda _c: fake)
    loop.run()
    return loop, fake


def values(logs: dict[int, list[tuple[int, bytes, bytes]]]) -> dict[int, list[bytes]]:
    return {p: [v for _ts, _k, v in log] for p, log in logs.items()}


def test_reads_everything_once_in_bounded_batches() -> None:
    logs = {p: [record(p, i) for i in range(25)] for p in range(3)}
    sink = MemorySink()
    loop, fake = run(logs, sink, close_when_full=True, max_inflight=2, commit_hint=True)
    assert loop.stats.stopped == "idle" and fake.closed
    assert sink.values == values(logs)
    assert all(b.records <= 7 for b in sink.batches)
    assert loop.stats.records == 75 and loop.stats.batches == len(sink.batches)
    last = {p: logs[p][-1] for p in logs}
    assert sink.positions == {p: Stored(25, fingerprint(*last[p])) for p in logs}
    assert fake.committed == dict.fromkeys(logs, 25)  # the hint


def test_resumes_from_the_sinks_verified_positions() -> None:
    logs = {0: [record(0, i) for i in range(10)], 1: [record(1, i) for i in range(4)]}
    sink = MemorySink(positions={0: Stored(6, fingerprint(*logs[0][5])),
                                 1: Stored(4, fingerprint(*logs[1][3]))})
    loop, _fake = run(logs, sink)
    # the record before each position is read back to verify it, and not stored again
    assert sink.values == {0: [v for _t, _k, v in logs[0][6:]]}
    assert sink.replaced == [] and loop.stats.log_resets == 0


def test_a_replaced_log_is_read_from_its_start() -> None:
    old = [record(0, i, "old") for i in range(10)]
    new = [record(0, i, "new") for i in range(12)]
    sink = MemorySink(positions={0: Stored(10, fingerprint(*old[9]))})
    loop, _fake = run({0: new}, sink)
    assert sink.replaced == [(0, "the record at offset 9 is not the one memory holds there")]
    assert sink.values == {0: [v for _t, _k, v in new]}
    assert loop.stats.log_resets == 1
    assert sink.batches[0].replaced == frozenset({0})
    assert all(not b.replaced for b in sink.batches[1:])


def test_a_log_ending_before_the_stored_position_was_replaced() -> None:
    old = [record(0, i, "old") for i in range(10)]
    new = [record(0, i, "new") for i in range(3)]
    sink = MemorySink(positions={0: Stored(10, fingerprint(*old[9]))})
    run({0: new}, sink)
    assert len(sink.replaced) == 1 and "beyond the log end" in sink.replaced[0][1]
    assert sink.values == {0: [v for _t, _k, v in new]}


def test_a_fenced_write_rereads_the_stored_positions() -> None:
    logs = {0: [record(0, i) for i in range(30)]}
    sink = MemorySink()

    def other_worker(fake: FakeConsumer) -> None:
        # once, while this worker reads: another one stores the first 12 records
        if fake.position.get(0, 0) >= 5 and 0 not in sink.positions:
            sink.values[0] = [v for _t, _k, v in logs[0][:12]]
            sink.positions[0] = Stored(12, fingerprint(*logs[0][11]))

    loop, _fake = run(logs, sink, on_consume=other_worker)
    assert loop.stats.fenced >= 1
    assert sink.values == values(logs)  # each record once


def test_a_failed_write_stops_the_loop_and_later_batches_are_not_written() -> None:
    logs = {0: [record(0, i) for i in range(40)]}
    sink = MemorySink(fail_at=2)
    with pytest.raises(OSError, match="disk full"):
        run(logs, sink, max_inflight=2, close_when_full=True)
    assert sink.writes == 2 and sink.values == {0: [v for _t, _k, v in logs[0][:7]]}


def test_group_mode_assigns_through_the_callback() -> None:
    logs = {p: [record(p, i) for i in range(9)] for p in range(2)}
    sink = MemorySink(positions={1: Stored(9, fingerprint(*logs[1][8]))})
    loop, _fake = run(logs, sink, partitions=None)
    assert loop.ever_assigned and sink.values == {0: values(logs)[0]}


def test_stop_ends_the_run_and_writes_what_was_read() -> None:
    logs = {0: [record(0, i) for i in range(20)]}
    sink = MemorySink()
    stop = threading.Event()
    fake = FakeConsumer(logs, on_consume=lambda f: stop.set() if f.position.get(0) else None)
    loop = ExactlyOnceConsumer(
        Settings(topic=TOPIC, kafka_bootstrap="fake:9092"),
        ConsumerOptions(group_id="g", partitions=(), batch_max_s=0.01, wait_s=0.05,
                        poll_s=0.01), sink, stop=stop, consumer_factory=lambda _c: fake)
    assert loop.run().stopped == "stop"
    stored = sink.positions[0].next_offset
    assert stored is not None and sink.values[0] == values(logs)[0][:stored]


def test_a_missing_topic_is_an_error_or_awaited() -> None:
    class Missing(RuntimeError):
        pass

    with pytest.raises(Missing, match="does not exist"):
        run({}, MemorySink(), missing_topic="error", error=Missing)
    loop, _fake = run({}, MemorySink(), until_idle=0.1, join_grace_s=0.1)
    assert loop.stats.stopped == "idle" and not loop.ever_assigned


def test_join_timeout() -> None:
    with pytest.raises(ConsumerError, match="no partition"):
        run({}, MemorySink(), partitions=None, until_idle=None, join_timeout_s=0.1)


def test_parse_partitions() -> None:
    assert parse_partitions(None) is None
    assert parse_partitions("all") == ()
    assert parse_partitions("2, 0,2") == (0, 2)
    with pytest.raises(ValueError, match="expected 'all'"):
        parse_partitions("x")


def test_stop_on_signals_sets_stop_and_restores_handlers() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
    assert signal.getsignal(signal.SIGTERM) == before
