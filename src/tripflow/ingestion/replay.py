"""Replay in event-time order: a bounded reorder buffer and the replay clock.

Day files are mostly, not strictly, in event-time order (late clicks land in a later
file, duplicates repeat a line). The reorder buffer holds records until the newest event
time read is `horizon` past them, then releases them in (event time, read order): any
record less than `horizon` late is put back in its place, memory stays bounded by one
horizon of records (a day of the log, never a year), and a record later than that is
sent where it was read (at the newest event time read), i.e. late, as a live system
would have seen it.

A replay split over several runs (one per simulated web server, e.g. one Airflow task
each) shares one schedule through a `ReplayAnchor`: the event time of the first record
and the wall-clock time at which it is due, fixed once by whoever plans the runs.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tripflow.records.rules import ONE_DAY_MS

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Orders items by event time within a bounded horizon.

    `push(event_ms, item)` takes items in read order; an item without a usable event
    time (a bad line) is given the time of the click read just before it, so it keeps
    its place in the file, and so is a click later than the horizon (it takes the newest
    time read). Items come back from `push` (when ready) and `drain` (at the end) as
    (schedule time, item), ordered by (schedule time, read order).
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
            if self._unplaced:  # they came first: same time, earlier sequence numbers
                for waiting in self._unplaced:
                    self._add(event_ms, waiting)
                self._unplaced.clear()
            if self._newest is None or event_ms > self._newest:
                self._newest = event_ms
            elif event_ms <= self._newest - self.horizon_ms:
                # Later than the horizon: it goes out where it was read, at the schedule
                # position of the newest record (as a live system received it), not at its
                # own long-past time, which would put it first and anchor the replay
                # clock days early.
                event_ms = self._newest
            self._previous = event_ms
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


@dataclass(frozen=True)
class ReplayAnchor:
    """One replay schedule shared by separately started runs.

    A record of event time e is due at `start_wall_ms + (e - first_event_ms) / speed`
    (epoch ms, wall clock), never before `start_wall_ms`; when rebasing, its new
    DateCreated is `rebase_ms + (e - first_event_ms) / speed` (None: no rebase).
    """

    first_event_ms: int
    start_wall_ms: int
    rebase_ms: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        """Plain JSON values (an Airflow XCom, a plan file)."""
        return {"first_event_ms": self.first_event_ms, "start_wall_ms": self.start_wall_ms,
                "rebase_ms": self.rebase_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplayAnchor:
        rebase_ms = data.get("rebase_ms")
        return cls(int(data["first_event_ms"]), int(data["start_wall_ms"]),
                   None if rebase_ms is None else int(rebase_ms))


def wall_to_monotonic(epoch_ms: int) -> float:
    """The time.monotonic() value at which the wall clock reads `epoch_ms`, as of now.

    Converted once per run: a run then keeps its schedule even if the wall clock is
    stepped mid-run, while runs on one machine still agree (they read the same clock).
    """
    return time.monotonic() + (epoch_ms - time.time_ns() / 1e6) / 1000.0


class ReplayClock:
    """Maps event time to wall-clock time at `speed` times real speed.

    Anchored on the first record asked about: it is due at once, and a record `g` ms of
    event time later is due `g / speed` ms of wall time later (never before the anchor).
    `rebased_ms` gives the epoch ms a record would carry if it happened when it is due:
    "now" for the first record, then the event-time gaps scaled by 1/speed.

    With a shared `anchor` the clock is anchored from the start on the anchor's first
    event time and wall-clock start instead, so that runs started apart follow one
    schedule; rebased times then start at the anchor's `rebase_ms` (else its start).
    """

    def __init__(self, speed: float, start_epoch_ms: int | None = None, *,
                 anchor: ReplayAnchor | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        if anchor is not None and start_epoch_ms is not None:
            raise ValueError("a shared anchor fixes the rebased start: no start_epoch_ms")
        self.speed = speed
        self._start_epoch_ms = start_epoch_ms
        self.anchor_ms: int | None = None  # event time of the first record
        self._anchor_mono = 0.0
        self._anchor_epoch_ms = 0
        if anchor is not None:
            self.anchor_ms = anchor.first_event_ms
            self._anchor_mono = wall_to_monotonic(anchor.start_wall_ms)
            self._anchor_epoch_ms = (anchor.start_wall_ms if anchor.rebase_ms is None
                                     else anchor.rebase_ms)

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
