"""Event-time alignment of partitions (tripflow.processing.alignment), without a broker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tripflow.messaging.sink import RECORD_SCHEMA
from tripflow.processing.alignment import (
    _NO_TIME,
    AlignedBuffers,
    PartitionBuffers,
    event_ms,
    event_times,
)

HOUR = 3_600_000
DAY = 24 * HOUR


def fill(buffers: PartitionBuffers, partition: int, times: list[int | None],
         first: int = 0) -> None:
    """Records named "p<partition>@<index>", added as one chunk (like one fetch)."""
    labels = [f"p{partition}@{first + i}" for i in range(len(times))]
    buffers.extend(partition, times, pa.table({"name": labels}))


def names(released: list[pa.Table]) -> list[str]:
    return [name for part in released for name in part["name"].to_pylist()]


def test_event_time_is_read_from_the_raw_record() -> None:
    assert event_ms(b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "x"}', None) == \
        1451606501933
    assert event_ms(b'{"DateCreated":"\\/Date(1451606501933)\\/"}', None) == 1451606501933
    assert event_ms(b'{"SessionId": "x"}', None) is None
    assert event_ms(None, None) is None
    assert event_ms(b'{"DateCreated": "/Date(915148800000)/"}', None) is None  # before 2000
    # more than a day after it was read: will be quarantined, must not move anything
    assert event_ms(b'{"DateCreated": "/Date(4102444800000)/"}', 1451606501933) is None


SAMPLE_LINES = (Path(__file__).resolve().parents[3]
                / "shared/data/tripclick_sample_2016-01-01.jsonl").read_bytes().splitlines()

def test_event_times_of_a_fetch_are_event_ms_of_each_record() -> None:
    """The vectorised pass gives, record by record, what event_ms gives."""
    read = 1451606501933 + 3_600_000  # an hour after the samples' clicks
    odd = [
        b'{"DateCreated": "/Date(915148800000)/"}',  # fixed shape, before 2000
        b'{"DateCreated": "/Date(4102444800000)/", "SessionId": "x"}',  # fixed, in the future
        b'{"DateCreated":"\\/Date(1451606501933)\\/"}',  # escaped slashes
        b'{"SessionId": "x", "DateCreated": "/Date(1451606501000)/"}',  # not the first key
        b'{"DateCreated": "/Date(14516065019330)/"}',  # 14 digits: not the fixed shape
        b'{"DateCreated": "/Date(145160650193x)/"}',  # not digits
        b'{"DateCreated": "/Date(1451606501933)/',  # cut right after the value
        b'{"DateCreated": "/Date(1451606501933)',  # too short for the fixed shape
        b"", None, b"\xff\xfe{",
    ]
    values = SAMPLE_LINES + odd
    # every read time: a normal one, none (Kafka's -1), and one before the click
    for read_ms in (read, -1, 1451606501933 - 2 * 86_400_000):
        stamps = np.full(len(values), read_ms, np.int64)
        got = event_times(pa.array(values, pa.binary()), stamps)
        want = [event_ms(v, read_ms) for v in values]
        assert [None if t == _NO_TIME else int(t) for t in got] == want
    # the samples all took the vectorised path and all have a time
    assert _NO_TIME not in event_times(pa.array(SAMPLE_LINES, pa.binary()),
                                      np.full(len(SAMPLE_LINES), read, np.int64)).tolist()
    # a slice of a larger array (an offset into its buffers) reads the right rows
    sliced = pa.array([b"x", *values], pa.binary()).slice(1)
    assert (event_times(sliced, np.full(len(values), read, np.int64)) ==
            event_times(pa.array(values, pa.binary()), np.full(len(values), read, np.int64))
            ).all()


def test_a_fetch_of_several_partitions_is_aligned_by_each_record_s_time() -> None:
    """One fetch mixing partitions: each partition's records keep their own event times
    (partition 1 is a day ahead, so only partition 0's records may go)."""
    click = SAMPLE_LINES[0]  # DateCreated 1451606501933
    ahead = click.replace(b"1451606501933", b"%d" % (1451606501933 + DAY))
    values = [click, ahead, b"not json", click, ahead]
    rows = pa.Table.from_arrays(
        [pa.array(values, pa.binary()), pa.array([0, 1, 0, 0, 1], pa.int32()),
         pa.array([10, 20, 11, 12, 21], pa.int64()),
         pa.array([-1, 1451606501933 + 2 * DAY, None, -1, -1], pa.int64()),  # (null: none)
         pa.array([b"k"] * 5, pa.binary())], schema=RECORD_SCHEMA)
    buffers = AlignedBuffers(slack_ms=HOUR, capacity=100, stall_s=60)
    buffers.add(rows)
    assert (buffers.size(0), buffers.size(1)) == (3, 2)
    released = buffers.release(100, partitions=[0, 1], may_have_more=lambda p: True, now=0.0)
    assert [(p, o) for part in released
            for p, o in zip(part["partition"].to_pylist(), part["offset"].to_pylist(),
                            strict=True)] == [(0, 10), (0, 11), (0, 12)]


def test_a_partition_ahead_waits_for_the_others() -> None:
    buffers = PartitionBuffers(slack_ms=HOUR, capacity=100)
    fill(buffers, 0, [0, DAY, 2 * DAY, 3 * DAY])  # one big chunk: days of event time
    # partition 1 has not delivered yet but may have records: nothing of 0 beyond its slack
    bound = buffers.bound([0, 1], lambda p: True)
    assert names(buffers.release(bound, 100)) == []
    fill(buffers, 1, [10, 20 * HOUR])
    bound = buffers.bound([0, 1], lambda p: True)
    assert bound == 20 * HOUR + HOUR
    assert names(buffers.release(bound, 100)) == ["p0@0", "p1@0", "p1@1"]
    # partition 1 read to its end: everything goes
    bound = buffers.bound([0, 1], lambda p: p != 1)
    assert names(buffers.release(bound, 100)) == ["p0@1", "p0@2", "p0@3"]


def test_the_limit_keeps_event_time_order_across_partitions() -> None:
    buffers = PartitionBuffers(slack_ms=0, capacity=100)
    fill(buffers, 0, [1, 2, 3, 4, 5, 6])
    fill(buffers, 1, [1, 2, 3, 4, 5, 6])
    out = names(buffers.release(10**12, 4))
    assert sorted(out) == ["p0@0", "p0@1", "p1@0", "p1@1"]  # the earliest, not one partition


def test_disorder_within_a_partition_never_blocks_release() -> None:
    # A late record deep in a buffer is earlier than every head: the limit must still let
    # whole prefixes go (a record goes with the greatest time before it).
    buffers = PartitionBuffers(slack_ms=0, capacity=100)
    fill(buffers, 0, [50, 60, 1, 2, 3])
    fill(buffers, 1, [55, 65, 4, 5, 6])
    out = names(buffers.release(10**12, 3))
    assert out and len(out) <= 10
    assert out[0] in ("p0@0", "p1@0")
    rest = names(buffers.release(10**12, 100))
    assert len(out) + len(rest) == 10


def test_records_without_time_go_at_once() -> None:
    buffers = PartitionBuffers(slack_ms=0, capacity=100)
    fill(buffers, 0, [None, None, 5])
    assert names(buffers.release(buffers.bound([0, 1], lambda p: True), 100)) == ["p0@0", "p0@1"]
    assert buffers.full(0) is False and buffers.size() == 1
    buffers.drop(0)
    assert buffers.size() == 0 and 0 not in buffers.seen


def test_a_record_dated_far_ahead_holds_its_partition_only_for_a_while() -> None:
    buffers = PartitionBuffers(slack_ms=HOUR, capacity=100)
    fill(buffers, 0, [10 * DAY, 1, 2])  # a click dated days ahead, then ordinary ones
    fill(buffers, 1, [0, 5])
    everyone = [0, 1]
    out = names(buffers.release(buffers.bound(everyone, lambda p: True), 100, now=0.0, stall_s=10))
    assert out == ["p1@0", "p1@1"] and buffers.forced == set()
    out = names(buffers.release(buffers.bound(everyone, lambda p: True), 100, now=5.0, stall_s=10))
    assert out == []
    out = names(buffers.release(buffers.bound(everyone, lambda p: True), 100, now=10.0, stall_s=10))
    assert out == ["p0@0", "p0@1", "p0@2"] and buffers.forced == {0}


def test_a_partition_held_in_part_but_moving_is_never_released_regardless() -> None:
    """The stall limit is for a first record held that long, not for a partition that
    keeps releasing records while the rest of its buffer waits for a slower one."""
    buffers = PartitionBuffers(slack_ms=HOUR, capacity=100)
    fill(buffers, 0, [h * HOUR for h in range(30)])
    for step in range(1, 16):  # partition 1 moves an hour every 2 s: partition 0 follows
        fill(buffers, 1, [step * HOUR], first=step)
        out = names(buffers.release(buffers.bound([0, 1], lambda p: True), 100,
                                    now=2.0 * step, stall_s=10))
        assert buffers.forced == set()
        assert f"p0@{step + 1}" in out and f"p0@{step + 2}" not in out
    # partition 1 stops: partition 0's first record held now goes 10 s later, not before
    assert names(buffers.release(buffers.bound([0, 1], lambda p: True), 100, now=39.0,
                                 stall_s=10)) == []
    assert len(names(buffers.release(buffers.bound([0, 1], lambda p: True), 100, now=40.0,
                                     stall_s=10))) == 30 - 17 and buffers.forced == {0}


def test_a_partition_fetched_in_chunks_releases_like_one_buffer() -> None:
    buffers = PartitionBuffers(slack_ms=0, capacity=100)
    fill(buffers, 0, [5, 50])
    fill(buffers, 0, [1, 60, 2], first=2)
    # p0@2 (time 1) goes with the greatest time before it (50); p0@3 (60) stops the cut
    # inside the second chunk
    assert names(buffers.release(55, 100)) == ["p0@0", "p0@1", "p0@2"]
    assert buffers.size(0) == 2 and buffers.seen[0] == 60
    assert names(buffers.release(10**12, 1)) == ["p0@3", "p0@4"]  # p0@4 goes with 60
    assert buffers.size() == 0


def records(partition: int, first_offset: int, times: list[int]) -> pa.Table:
    """One fetch of a partition: sample clicks re-dated to `times` (epoch ms)."""
    click = SAMPLE_LINES[0]  # DateCreated 1451606501933
    values = [click.replace(b"1451606501933", b"%d" % t) for t in times]
    n = len(times)
    return pa.Table.from_arrays(
        [pa.array(values, pa.binary()), pa.array([partition] * n, pa.int32()),
         pa.array(range(first_offset, first_offset + n), pa.int64()),
         pa.array([-1] * n, pa.int64()), pa.array([b"k"] * n, pa.binary())],
        schema=RECORD_SCHEMA)


def offsets(released: list[pa.Table]) -> list[int]:
    return [o for part in released for o in part["offset"].to_pylist()]


def test_another_worker_s_partition_behind_holds_this_one_s_records() -> None:
    """Alignment across workers: this worker (partition 0, read to its end) releases
    records only up to the slack past where the other worker's partition 5 still has
    records to write; what it publishes counts its records until they are written."""
    t0 = 1451606501933
    peer: dict[int, int | None] = {5: None}  # partition 5: assigned, nothing fetched yet
    published: list[dict[int, tuple[int | None, bool]]] = []

    def exchange(own: dict[int, tuple[int | None, bool]]) -> dict[int, int | None]:
        published.append(own)
        return dict(peer)

    buffers = AlignedBuffers(slack_ms=HOUR, capacity=100, stall_s=60, peers=exchange)
    buffers.add(records(0, 0, [t0, t0 + 2 * HOUR, t0 + 10 * HOUR]))
    release = lambda: offsets(buffers.release(  # noqa: E731
        100, partitions=[0], may_have_more=lambda p: False, now=0.0))
    assert release() == []  # the peer has fetched nothing yet: it may have anything
    assert published[-1] == {0: (t0, True)}
    peer[5] = t0
    assert release() == [0]
    # offset 0 is in flight: its time still counts in what this worker publishes
    assert published[-1] == {0: (t0, True)}
    buffers.written({0: 1})
    assert published[-1] == {0: (t0 + 2 * HOUR, True)}
    peer[5] = t0 + 9 * HOUR
    assert release() == [1, 2]  # 10 h is within the slack past 9 h
    buffers.written({0: 3})
    # nothing left to write and nothing more to fetch: it holds nobody back
    assert published[-1] == {0: (t0 + 10 * HOUR, False)}
    # a peer far behind holds only until the stall limit (a worker that hangs)
    buffers.add(records(0, 3, [t0 + 20 * HOUR]))
    peer[5] = t0
    assert offsets(buffers.release(100, partitions=[0], may_have_more=lambda p: False,
                                   now=100.0)) == []
    assert offsets(buffers.release(100, partitions=[0], may_have_more=lambda p: False,
                                   now=160.0)) == [3]
    # a revoked partition is no longer published, nor its records in flight
    buffers.drop(0)
    assert buffers.progress() == {}
    # where its records start is the first one's time: a late click deep in the buffer
    # (late anyway) does not hold the other workers back
    buffers.add(records(0, 10, [t0 + 30 * HOUR, t0 + HOUR, t0 + 31 * HOUR]))
    assert release() == []
    assert buffers.progress() == {0: (t0 + 30 * HOUR, True)}


def test_two_workers_reading_a_backlog_never_hold_each_other_for_good(monkeypatch) -> None:
    """Two workers' AlignedBuffers exchanging progress through a shared table (as the hot
    store's hot_progress does), each with two partitions of 20 days of clicks in order,
    plus clicks arriving up to 3 days late and one dated 10 days ahead. They finish without
    the stall limit, and no in-order click (but those behind the one dated ahead) is
    released later than the horizon (twice the slack) behind the greatest time released
    before it."""
    monkeypatch.setattr("tripflow.processing.alignment.PEER_WAIT_S", 0.0)
    rng = np.random.default_rng(5)
    t0 = 1451606501933
    table: dict[int, tuple[int | None, bool]] = {}

    def exchange_for(mine: set[int]):
        def exchange(own: dict[int, tuple[int | None, bool]]) -> dict[int, int | None]:
            table.update(own)
            return {p: t for p, (t, pending) in table.items() if p not in mine and pending}
        return exchange

    workers = [AlignedBuffers(slack_ms=DAY, capacity=10**6, stall_s=10,
                              peers=exchange_for(set(parts))) for parts in ([0, 1], [2, 3])]
    in_order: set[tuple[int, int]] = set()
    for w, parts in enumerate(([0, 1], [2, 3])):
        for p in parts:
            times = np.sort(rng.integers(t0, t0 + 20 * DAY, 2000))
            in_order.update((p, o) for o in range(2000))
            late = rng.choice(2000, 40, replace=False)
            times[late] -= rng.integers(HOUR, 3 * DAY, 40)
            in_order.difference_update((p, int(o)) for o in late)
            if p == 1:
                # dated far ahead of everything: it and the clicks behind it wait for the
                # others (as with one worker), whose clock then leaves those behind
                times[700] = t0 + 30 * DAY
                in_order.difference_update((p, o) for o in range(700, 2000))
            for first in range(0, 2000, 500):  # fetched in slices
                workers[w].add(records(p, first, times[first:first + 500].tolist()))
    clock, behind = 0, []
    for _round in range(10_000):
        if not any(w.size() for w in workers):
            break
        for w, parts in zip(workers, ([0, 1], [2, 3]), strict=True):
            released = w.release(300, partitions=parts, may_have_more=lambda p: False,
                                 now=0.0)
            assert not w.parts.forced
            for rows in released:
                p = rows["partition"][0].as_py()
                ms = event_times(rows["value"].combine_chunks(),
                                 np.full(rows.num_rows, -1, np.int64))
                for o, t in zip(rows["offset"].to_pylist(), ms.tolist(), strict=True):
                    if (p, o) in in_order and t < clock - 2 * DAY:
                        behind.append((p, o))
                clock = max(clock, int(ms.max()))
                w.written({p: int(pc.max(rows["offset"]).as_py()) + 1})
    assert not any(w.size() for w in workers)
    assert behind == []
