"""Event-time alignment of partitions while the worker catches up on a backlog.

Why: the hot store's clock is the greatest event time stored, and a click older than
clock - horizon is "late for hot". Reading a backlog, a broker hands out one partition's
records in large chunks (the embedded broker gives tens of thousands at a time, days of
event time), so without care one partition's records push the clock days ahead and the
other partitions' records, read a moment later, all look late.

How: fetched records wait in a bounded buffer per partition and are released in
event-time order across partitions, in the spirit of Kafka Streams: a record is released
only when its event time is at most `slack` (half the horizon) past the event time reached
by every partition that may still have unread records (their next records cannot be much
older than what they gave so far). Partitions whose buffer is full are paused at the
broker until it drains; nothing is ever dropped or re-read. When every partition is caught
up (the live case), every buffered record is released at once, so alignment costs no
latency. A partition whose first record is held back too long (a click dated far ahead) is
released anyway.

Several workers share the clock, so the partitions other workers read count too: each
worker publishes its partitions' progress in PostgreSQL and reads the others'
(`AlignedBuffers`, `tripflow.processing.stream_sink.HotSink.exchange_progress`).

Event times come from the raw bytes, without parsing: at fixed offsets for records of the
exact TripClick shape (`rawdates`, a whole fetch at once), else by a scan for `DateCreated`;
records without a usable one (bad records, quarantined later) never hold anything back.

Records wait as Arrow tables, one per fetch and partition, not as Python objects: a
backlog keeps tens of thousands of them buffered, and Python's small-object heap holds
on to the high-water mark of its arenas for good.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from tripflow.records import rules
from tripflow.records.rawdates import fixed_shape_event_ms

log = logging.getLogger("tripflow.stream")

# DateCreated in the raw bytes; at most 15 digits: a longer value (beyond the year 33000)
# is never a plausible event time, even without a read time to compare it with.
_DATE = re.compile((rules.DATE_CREATED_KEY + r'\\?/Date\((\d{1,15})\)\\?/"').encode())
_NO_TIME = -(2**62)  # a record without a usable event time: never holds anything back
_ALWAYS = 2**62


def event_ms(value: bytes | None, read_ms: int | None) -> int | None:
    """The record's event time in epoch ms, or None when it has no plausible one (such a
    record will be quarantined, so it must not move the alignment)."""
    if not value:
        return None
    match = _DATE.search(value, 0, 4096)
    if match is None:
        return None
    ms = int(match.group(1))
    if ms < rules.EARLIEST_EVENT_MS or (read_ms is not None and read_ms > 0
                                        and not rules.plausible(ms, read_ms)):
        return None
    return ms


def event_times(values: pa.Array, read_ms: np.ndarray) -> np.ndarray:
    """event_ms() of each record (int64, _NO_TIME for None) read at `read_ms` (its Kafka
    timestamp, int64): records of the fixed TripClick shape in one vectorised pass (the
    value the scan would find, the same plausibility rule), the rest one by one."""
    ms, fixed = fixed_shape_event_ms(values)
    usable = (ms >= rules.EARLIEST_EVENT_MS) & (
        (read_ms <= 0) | (ms - rules.FUTURE_TOLERANCE_MS <= read_ms))
    times = np.where(fixed & usable, ms, _NO_TIME)
    for i in np.flatnonzero(~fixed).tolist():
        found = event_ms(values[i].as_py(), int(read_ms[i]))
        if found is not None:
            times[i] = found
    return times


def _first_timed(times: np.ndarray) -> int:
    """The first event time in `times` that is one (_ALWAYS: none is)."""
    timed = np.flatnonzero(times != _NO_TIME)
    return int(times[timed[0]]) if len(timed) else _ALWAYS


class _Buffer:
    """One partition's waiting records: FIFO chunks of (event times, rows)."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[np.ndarray, pa.Table]] = deque()
        self.size = 0

    def append(self, times: np.ndarray, rows: pa.Table) -> None:
        self.chunks.append((times, rows))
        self.size += len(times)

    def head_time(self) -> int | None:
        """Event time of the first record (None when empty or without a time)."""
        if not self.chunks:
            return None
        first = int(self.chunks[0][0][0])
        return None if first == _NO_TIME else first

    def first_time(self) -> int | None:
        """Event time of the first record that has one (None: none has)."""
        for times, _ in self.chunks:
            timed = _first_timed(times)
            if timed != _ALWAYS:
                return timed
        return None

    def prefix_times(self) -> np.ndarray:
        """For each record: the greatest event time up to it (non-decreasing; a record
        goes with a bound iff this time is within it)."""
        if not self.chunks:
            return np.empty(0, np.int64)
        return np.maximum.accumulate(np.concatenate([times for times, _ in self.chunks]))

    def take(self, count: int) -> tuple[list[pa.Table], int]:
        """Remove and return the first `count` records (zero-copy slices), and the event
        time of the first of them that has one (_ALWAYS when none has)."""
        out: list[pa.Table] = []
        first = _ALWAYS
        while count > 0:
            times, rows = self.chunks[0]
            if count >= len(times):
                self.chunks.popleft()
                out.append(rows)
                taken = len(times)
            else:
                self.chunks[0] = (times[count:], rows.slice(count))
                out.append(rows.slice(0, count))
                taken = count
            if first == _ALWAYS:
                first = _first_timed(times[:taken])
            count -= taken
            self.size -= taken
        return out, first


class PartitionBuffers:
    """Per-partition FIFO buffers of Arrow rows, released in event-time order (see the
    module docstring)."""

    def __init__(self, slack_ms: int, capacity: int) -> None:
        self.slack_ms = slack_ms
        self.capacity = capacity
        self._buffers: dict[int, _Buffer] = {}
        self.seen: dict[int, int] = {}  # greatest event time buffered per partition
        self._blocked_since: dict[int, float] = {}  # first record held by the bound since
        self.forced: set[int] = set()  # released regardless by the last release()
        # event time of the first record with one given by the last release(), per partition
        self.released_first: dict[int, int] = {}

    def extend(self, partition: int, times: Sequence[int | None] | np.ndarray,
               rows: pa.Table) -> None:
        """Append one partition's records, in order: their event times (None, or
        _NO_TIME in an int64 array, for none) and their rows."""
        if len(times) != rows.num_rows:
            raise ValueError(f"{len(times)} event times for {rows.num_rows} rows")
        if not len(times):
            return
        array = (times if isinstance(times, np.ndarray) else np.fromiter(
            (_NO_TIME if t is None else t for t in times), np.int64, len(times)))
        self._buffers.setdefault(partition, _Buffer()).append(array, rows)
        greatest = int(array.max())
        if greatest != _NO_TIME and greatest > self.seen.get(partition, _NO_TIME):
            self.seen[partition] = greatest

    def size(self, partition: int | None = None) -> int:
        if partition is None:
            return sum(b.size for b in self._buffers.values())
        buffer = self._buffers.get(partition)
        return buffer.size if buffer is not None else 0

    def full(self, partition: int) -> bool:
        return self.size(partition) >= self.capacity

    def first_time(self, partition: int) -> int | None:
        """Event time of a partition's first buffered record that has one (None: none)."""
        buffer = self._buffers.get(partition)
        return buffer.first_time() if buffer is not None else None

    def drop(self, partition: int) -> None:
        """Forget a partition's buffer and progress (revoked, or re-read from elsewhere)."""
        self._buffers.pop(partition, None)
        self.seen.pop(partition, None)
        self._blocked_since.pop(partition, None)

    def bound(self, partitions: Iterable[int], may_have_more: Callable[[int], bool]) -> int:
        """The greatest event time that may be released now."""
        bound = _ALWAYS
        for p in partitions:
            if may_have_more(p):
                bound = min(bound, self.seen.get(p, _NO_TIME) + self.slack_ms)
        return bound

    def release(self, bound: int, limit: int, *, now: float = 0.0,
                stall_s: float = float("inf")) -> list[pa.Table]:
        """Take from each buffer its records up to the first one later than `bound`. With
        more than `limit` of them, lower the bound so that about `limit` go, the earliest
        first (in event-time order across partitions: the records held back are the later
        ones, so they cannot fall behind the clock the released ones set). Returns the
        released rows, partition by partition, each in fetch order.

        A buffer whose first record has been held by `bound` for `stall_s` (e.g. a click
        dated far ahead of the rest, which no other partition will ever catch up with) is
        released whole: alignment must never stop a partition for good. Such partitions
        are in `self.forced` afterwards.
        """
        self.forced = {p for p, since in self._blocked_since.items()
                       if now - since >= stall_s and self.size(p)}
        prefix = {p: b.prefix_times() for p, b in self._buffers.items() if p not in self.forced}
        # how many records of each partition the bound lets go (prefix times only grow)
        going = {p: int(np.searchsorted(times, bound, side="right"))
                 for p, times in prefix.items()}
        if sum(going.values()) > limit:
            candidates = np.concatenate([prefix[p][:n] for p, n in going.items()])
            cut = int(np.partition(candidates, limit - 1)[limit - 1])
            going = {p: int(np.searchsorted(times, cut, side="right"))
                     for p, times in prefix.items()}
        out: list[pa.Table] = []
        self.released_first = {}
        for p, buffer in self._buffers.items():
            taken, first = buffer.take(buffer.size if p in self.forced else going[p])
            out.extend(taken)
            if first != _ALWAYS:
                self.released_first[p] = first
            head = buffer.head_time()
            if head is None or head <= bound:  # not held by alignment (maybe by the limit)
                self._blocked_since.pop(p, None)
            elif taken:  # records went: the first one held now waits from now on
                self._blocked_since[p] = now
            else:
                self._blocked_since.setdefault(p, now)
        return out


# Other workers' partitions (see AlignedBuffers): given this worker's progress per
# partition (event time, records still to come), publishes it and returns the other
# partitions' that still have records to come (partition -> event time or None).
Peers = Callable[[dict[int, tuple[int | None, bool]]], dict[int, int | None]]
# While other workers' partitions hold back every buffered record: how long to wait
# before asking again (their progress only shows once they publish it).
PEER_WAIT_S = 0.02


class AlignedBuffers:
    """The consumer loop's buffers for the hot path (see tripflow.messaging.buffers):
    fetched rows are split by partition with their event times into PartitionBuffers and
    released up to the bound that the partitions which may still have records allow.

    With `peers`, those include the other workers' partitions: each worker publishes, for
    each of its partitions that still has records to come, where they start in event time
    (the time of the first of its records fetched and not yet written, in a batch in flight
    or buffered, else the latest fetched), and no worker releases records beyond the slack
    past any of them. Without that, a worker reading a backlog runs ahead of a slower one
    by more than the horizon, and the slower one's clicks all arrive late for hot. (The
    first record, not the earliest: records go in that order, and a late click deep in a
    buffer, late anyway, must not hold the other workers back.)
    """

    def __init__(self, slack_ms: int, capacity: int, stall_s: float,
                 peers: Peers | None = None, peer_slack_ms: int | None = None) -> None:
        self.parts = PartitionBuffers(slack_ms, capacity)
        self.peer_slack_ms = slack_ms if peer_slack_ms is None else peer_slack_ms
        self.capacity = capacity
        self.stall_s = stall_s
        self.peers = peers
        self.peer_bound = _ALWAYS  # as of the last exchange with the peers
        self._assigned: list[int] = []
        self._more: dict[int, bool] = {}  # may_have_more per partition, last release
        self._published: dict[int, bool] = {}  # records to come, as last published
        # released, not known to be written yet: (last offset, first event time) per batch
        self._inflight: dict[int, deque[tuple[int, int]]] = {}

    def add(self, rows: pa.Table) -> None:
        times = event_times(rows["value"].combine_chunks(),  # (a null read time: none)
                            rows["timestamp"].combine_chunks().fill_null(-1).to_numpy())
        partitions = rows["partition"].to_numpy()
        first = int(partitions[0])
        if (partitions == first).all():
            self.parts.extend(first, times, rows)
            fetched = [first]
        else:
            fetched = np.unique(partitions).tolist()
            for p in fetched:
                at = np.flatnonzero(partitions == p)
                self.parts.extend(p, times[at], rows.take(pa.array(at)))
        if any(not self._published.get(p, False) for p in fetched):
            self._exchange()  # records for a partition said to have none: say so at once

    def size(self, partition: int | None = None) -> int:
        return self.parts.size(partition)

    def full(self, partition: int) -> bool:
        return self.parts.full(partition)

    def drop(self, partition: int) -> None:
        self.parts.drop(partition)
        self._inflight.pop(partition, None)  # written by now, or to be read again
        # not published as this worker's any more (revoked; a seek adds it back at once)
        self._assigned = [p for p in self._assigned if p != partition]
        self._more.pop(partition, None)

    def written(self, ends: dict[int, int]) -> None:
        """A batch was written: partition -> the next offset now stored."""
        for p, next_offset in ends.items():
            queue = self._inflight.get(p)
            while queue and queue[0][0] < next_offset:
                queue.popleft()
        self._exchange()

    def progress(self) -> dict[int, tuple[int | None, bool]]:
        """What this worker publishes for each of its partitions: where its records still
        to be written start in event time, and whether there are any."""
        out: dict[int, tuple[int | None, bool]] = {}
        for p in self._assigned:
            inflight = self._inflight.get(p)
            start = inflight[0][1] if inflight else self.parts.first_time(p)
            if start is not None:
                out[p] = (start, True)
            else:
                out[p] = (self.parts.seen.get(p), self._more.get(p, True))
        return out

    def _exchange(self) -> None:
        # At every release and write, even alone: a worker cannot tell when another one
        # starts on other partitions (a throttle while alone let one run a whole backlog
        # ahead of a peer that had just started).
        if self.peers is None or not self._assigned:
            return
        progress = self.progress()
        self._published = {p: pending for p, (_, pending) in progress.items()}
        others = self.peers(progress)
        self.peer_bound = min(((_NO_TIME if t is None else t) + self.peer_slack_ms
                               for t in others.values()), default=_ALWAYS)

    def release(self, limit: int, *, partitions: list[int],
                may_have_more: Callable[[int], bool], now: float) -> list[pa.Table]:
        parts = self.parts
        self._assigned = partitions
        self._more = {p: may_have_more(p) for p in partitions}
        self._exchange()
        own = parts.bound(partitions, self._more.__getitem__)
        released = parts.release(min(own, self.peer_bound), limit, now=now,
                                 stall_s=self.stall_s)
        if parts.forced:
            log.warning("event-time alignment: partition(s) %s held back for %.0f s (a "
                        "record dated far ahead, or another worker's partitions far "
                        "behind?); released regardless", sorted(parts.forced), self.stall_s)
        if self.peers is not None:
            self._track(released)
            if not released and self.peer_bound < own and parts.size():
                time.sleep(PEER_WAIT_S)  # the peers hold everything: let them catch up
        return released

    def _track(self, released: list[pa.Table]) -> None:
        """Remember the released records of each partition as in flight until written."""
        last: dict[int, int] = {}
        for rows in released:  # each one partition's, in offset order
            p = rows["partition"][0].as_py()
            last[p] = max(last.get(p, -1), rows["offset"][-1].as_py())
        for p, offset in last.items():
            first = self.parts.released_first.get(p)
            if first is not None:
                self._inflight.setdefault(p, deque()).append((offset, first))
