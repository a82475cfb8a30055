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
latency. A partition held back too long (a click dated far ahead) is released anyway.

Event times come from a cheap scan of the raw bytes for `DateCreated`; records without a
usable one (bad records, quarantined later) never hold anything back.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_DATE = re.compile(rb'"DateCreated"\s*:\s*"\\?/Date\((\d{1,15})\)\\?/"')
_Y2000_MS = 946_684_800_000
_DAY_MS = 86_400_000
_NEVER = -(2**62)
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
    if ms < _Y2000_MS or (read_ms is not None and read_ms > 0 and ms - _DAY_MS > read_ms):
        return None
    return ms


class PartitionBuffers(Generic[T]):
    """Per-partition FIFO buffers released in event-time order (see the module docstring)."""

    def __init__(self, slack_ms: int, capacity: int) -> None:
        self.slack_ms = slack_ms
        self.capacity = capacity
        self._buffers: dict[int, deque[tuple[int | None, T]]] = {}
        self.seen: dict[int, int] = {}  # greatest event time buffered per partition
        self._blocked_since: dict[int, float] = {}  # first record held by the bound since
        self.forced: set[int] = set()  # released regardless by the last release()

    def add(self, partition: int, ms: int | None, item: T) -> None:
        self._buffers.setdefault(partition, deque()).append((ms, item))
        if ms is not None and ms > self.seen.get(partition, _NEVER):
            self.seen[partition] = ms

    def extend(self, partition: int, items: list[tuple[int | None, T]]) -> None:
        """add() for many records of one partition, in order."""
        self._buffers.setdefault(partition, deque()).extend(items)
        times = [ms for ms, _item in items if ms is not None]
        if times:
            self.seen[partition] = max(self.seen.get(partition, _NEVER), max(times))

    def size(self, partition: int | None = None) -> int:
        if partition is None:
            return sum(len(b) for b in self._buffers.values())
        return len(self._buffers.get(partition, ()))

    def full(self, partition: int) -> bool:
        return self.size(partition) >= self.capacity

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
                bound = min(bound, self.seen.get(p, _NEVER) + self.slack_ms)
        return bound

    def _prefix_times(self, bound: int, forced: set[int]) -> list[int]:
        """For every record that `bound` lets go: the greatest event time up to it in its
        buffer (a record goes with a bound iff that time is within it)."""
        times: list[int] = []
        for p, buffer in self._buffers.items():
            if p in forced:
                continue
            greatest = _NEVER
            for ms, _item in buffer:
                if ms is not None:
                    if ms > bound:
                        break
                    greatest = max(greatest, ms)
                times.append(greatest)
        return times

    def releasable(self, bound: int) -> int:
        """How many records `bound` lets go."""
        return len(self._prefix_times(bound, set()))

    def release(self, bound: int, limit: int, *, now: float = 0.0,
                stall_s: float = float("inf")) -> list[T]:
        """Take from each buffer its records up to the first one later than `bound`. With
        more than `limit` of them, lower the bound so that about `limit` go, the earliest
        first (in event-time order across partitions: the records held back are the later
        ones, so they cannot fall behind the clock the released ones set).

        A buffer whose first record has been held by `bound` for `stall_s` (e.g. a click
        dated far ahead of the rest, which no other partition will ever catch up with) is
        released whole: alignment must never stop a partition for good. Such partitions
        are in `self.forced` afterwards.
        """
        self.forced = {p for p, since in self._blocked_since.items()
                       if now - since >= stall_s and self._buffers.get(p)}
        times = self._prefix_times(bound, self.forced)
        cut = bound
        if len(times) > limit:
            times.sort()
            cut = times[limit - 1]
        out: list[T] = []
        for p, buffer in self._buffers.items():
            if p in self.forced:
                out.extend(item for _ms, item in buffer)
                buffer.clear()
                continue
            while buffer:
                ms, item = buffer[0]
                if ms is not None and ms > cut:
                    break
                buffer.popleft()
                out.append(item)
        for p, buffer in self._buffers.items():
            head = buffer[0][0] if buffer else None
            if head is not None and head > bound:  # held by alignment, not by the limit
                self._blocked_since.setdefault(p, now)
            else:
                self._blocked_since.pop(p, None)
        return out
