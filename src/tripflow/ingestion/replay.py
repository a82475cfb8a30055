"""Replay in event-time order: a bounded reorder buffer and the replay clock.

Day files are mostly, not strictly, in event-time order (late clicks land in a later
file, duplicates repeat a line). The reorder buffer holds records until the newest event
time read is `horizon` past them, then releases them in (event time, read order): any
record less than `horizon` late is put back in its place, memory stays bounded by one
horizon of records (a day of the log, never a year), and a record later than that is
released at once, i.e. sent late, as a live system would have seen it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

ONE_DAY_MS = 86_400_000


class ReorderBuffer(Generic[T]):
    """Orders items by event time within a bounded horizon.

    `push(event_ms, item)` takes items in read order; an item without a usable event
    time (a bad line) is given the time of the click read just before it, so it keeps
    its place in the file. Items come back from `push` (when ready) and `drain` (at the
    end) as (event_ms, item), ordered by (event_ms, read order).
    """

    def __init__(self, horizon_ms: int = ONE_DAY_MS) -> None:
        if horizon_ms < 0:
            raise ValueError("the reorder horizon cannot be negative")
        self.horizon_ms = horizon_ms
        # (event_ms, seq, item): seq is unique, so items are never compared.
        self._heap: list[tuple[int, int, T]] = []
        self._seq = 0
        self._newest: int | None = None  # newest event time read so far
        self._previous: int | None = None  # event time of the last click read
        self._unplaced: list[T] = []  # bad lines read before any click

    def __len__(self) -> int:
        return len(self._heap) + len(self._unplaced)

    def push(self, event_ms: int | None, item: T) -> Iterator[tuple[int, T]]:
        if event_ms is None:
            if self._previous is None:
                self._unplaced.append(item)
                return iter(())
            event_ms = self._previous
        else:
            self._previous = event_ms
            if self._unplaced:  # they came first: same time, earlier sequence numbers
                for waiting in self._unplaced:
                    self._add(event_ms, waiting)
                self._unplaced.clear()
            if self._newest is None or event_ms > self._newest:
                self._newest = event_ms
        self._add(event_ms, item)
        return self._ready(self._newest - self.horizon_ms)  # type: ignore[operator]

    def drain(self) -> Iterator[tuple[int, T]]:
        """Everything still held, in order (bad lines with no click at all get time 0)."""
        for waiting in self._unplaced:
            self._add(0, waiting)
        self._unplaced.clear()
        while self._heap:
            event_ms, _seq, item = heapq.heappop(self._heap)
            yield event_ms, item

    def _add(self, event_ms: int, item: T) -> None:
        heapq.heappush(self._heap, (event_ms, self._seq, item))
        self._seq += 1

    def _ready(self, until_ms: int) -> Iterator[tuple[int, T]]:
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            event_ms, _seq, item = heapq.heappop(heap)
            yield event_ms, item


class ReplayClock:
    """Maps event time to wall-clock time at `speed` times real speed.

    Anchored on the first record asked about: it is due at once, and a record `g` ms of
    event time later is due `g / speed` ms of wall time later (never before the anchor).
    `rebased_ms` gives the epoch ms a record would carry if it happened when it is due:
    "now" for the first record, then the event-time gaps scaled by 1/speed.
    """

    def __init__(self, speed: float, start_epoch_ms: int | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start_epoch_ms = start_epoch_ms
        self.anchor_ms: int | None = None  # event time of the first record
        self._anchor_mono = 0.0
        self._anchor_epoch_ms = 0

    def _anchor(self, event_ms: int) -> None:
        self.anchor_ms = event_ms
        self._anchor_mono = time.monotonic()
        self._anchor_epoch_ms = (
            time.time_ns() // 1_000_000 if self._start_epoch_ms is None else self._start_epoch_ms
        )

    def due(self, event_ms: int) -> float:
        """time.monotonic() value at which a record of this event time is sent."""
        if self.anchor_ms is None:
            self._anchor(event_ms)
        offset_ms = max(0, event_ms - self.anchor_ms)  # type: ignore[operator]
        return self._anchor_mono + offset_ms / 1000.0 / self.speed

    def rebased_ms(self, event_ms: int) -> int:
        if self.anchor_ms is None:
            self._anchor(event_ms)
        return self._anchor_epoch_ms + round((event_ms - self.anchor_ms) / self.speed)  # type: ignore[operator]
