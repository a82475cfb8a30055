"""The replay scheduler's parts: the bounded reorder buffer and the replay clock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tripflow.ingestion.admin import IngestionError
from tripflow.ingestion.feed import Reading, feed_replay
from tripflow.ingestion.producer import _resolve_rebase
from tripflow.ingestion.replay import ReorderBuffer, ReplayClock
from tripflow.ingestion.server import decode_batch
from tripflow.ingestion.unsent import UnsentLines
from tripflow.settings import Settings

MINUTE = 60_000
HOUR = 60 * MINUTE


def replay(buffer: ReorderBuffer[str], pushes: list[tuple[int | None, str]]) -> list[str]:
    released = []
    for event_ms, item in pushes:
        released += [item for _ms, item in buffer.push(event_ms, item)]
    return released + [item for _ms, item in buffer.drain()]


def test_late_records_within_the_horizon_are_put_back_in_order() -> None:
    pushes = [(0, "a"), (2 * MINUTE, "c"), (MINUTE, "b (late)"), (3 * MINUTE, "d")]
    assert replay(ReorderBuffer(horizon_ms=HOUR), pushes) == ["a", "b (late)", "c", "d"]


def test_equal_times_keep_read_order() -> None:
    pushes = [(5, "first"), (5, "second"), (5, "third")]
    assert replay(ReorderBuffer(HOUR), pushes) == ["first", "second", "third"]


def test_records_later_than_the_horizon_are_sent_where_they_were_read() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(horizon_ms=HOUR)
    pushes = [(0, "a"), (2 * HOUR, "b"), (3 * HOUR, "c"), (30 * MINUTE, "very late"),
              (4 * HOUR, "d")]
    assert replay(buffer, pushes) == ["a", "b", "c", "very late", "d"]


def test_a_very_late_record_neither_comes_first_nor_anchors_the_schedule() -> None:
    """A day file holding clicks from days before (late clicks) must not start the replay
    at those clicks' time: the schedule would then run days of event time first."""
    day = 24 * HOUR
    buffer: ReorderBuffer[str] = ReorderBuffer(horizon_ms=day)
    pushes = [(3 * day, "on time 1"), (3 * day + MINUTE, "on time 2"), (0, "3 days late"),
              (3 * day + 2 * MINUTE, "on time 3")]
    released = [pair for ms, item in pushes for pair in buffer.push(ms, item)]
    released += list(buffer.drain())
    assert released == [(3 * day, "on time 1"), (3 * day + MINUTE, "on time 2"),
                        (3 * day + MINUTE, "3 days late"), (3 * day + 2 * MINUTE, "on time 3")]


def test_bad_lines_keep_their_place_in_the_file() -> None:
    pushes = [(None, "bad before any click"), (10, "a"), (None, "bad after a"), (30, "c"),
              (20, "b (late)"), (None, "bad after b")]
    assert replay(ReorderBuffer(HOUR), pushes) == [
        "bad before any click", "a", "bad after a", "b (late)", "bad after b", "c"
    ]  # fmt: skip


def test_only_bad_lines() -> None:
    assert replay(ReorderBuffer(HOUR), [(None, "x"), (None, "y")]) == ["x", "y"]


def test_memory_is_bounded_by_the_horizon() -> None:
    """A year of one record a minute goes through holding about one horizon of it."""
    buffer: ReorderBuffer[int] = ReorderBuffer(horizon_ms=HOUR)
    rng = random.Random(1)
    largest = 0
    released: list[int] = []
    for minute in range(365 * 24 * 60):
        jitter = rng.randrange(-10, 1) * MINUTE  # up to ten minutes late
        released += [ms for ms, _item in buffer.push(minute * MINUTE + jitter, minute)]
        largest = max(largest, len(buffer))
    released += [ms for ms, _item in buffer.drain()]
    assert largest <= 61 + 10
    assert released == sorted(released)
    assert len(released) == 365 * 24 * 60


def test_clock_scales_gaps_by_speed() -> None:
    clock = ReplayClock(speed=600)
    start = clock.due(1_000_000)
    assert abs(start - time.monotonic()) < 0.05
    assert clock.due(1_000_000 + 60_000) - start == pytest.approx(0.1)  # a minute in 0.1 s
    assert clock.due(1_000_000 - 60_000) == start  # earlier than the first: at once


def test_rebased_times_start_now_and_keep_scaled_gaps() -> None:
    before = time.time_ns() // 1_000_000
    clock = ReplayClock(speed=600)
    first = clock.rebased_ms(1_451_606_501_933)
    after = time.time_ns() // 1_000_000
    assert before <= first <= after
    assert clock.rebased_ms(1_451_606_501_933 + 600_000) == first + 1_000
    fixed = ReplayClock(speed=2, start_epoch_ms=1_700_000_000_000)
    assert fixed.rebased_ms(10_000) == 1_700_000_000_000
    assert fixed.rebased_ms(12_001) == 1_700_000_001_000  # 2001 ms / 2, rounded (half even)


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayClock(speed=0)


class _FakeServer:
    """Records what the scheduler hands over, and when."""

    def __init__(self, log: list[tuple[float, int, bytes]], index: int) -> None:
        self.log, self.index = log, index

    def put(self, payload: bytes) -> bool:
        for value in decode_batch(payload)[0]:
            self.log.append((time.monotonic(), self.index, value))
        return True


def click(session: str, event_ms: int) -> bytes:
    return (b'{"DateCreated": "/Date(%d)/", "SessionId": "%s", "DocumentId": 1}'
            % (event_ms, session.encode()))


def test_scheduler_releases_in_event_time_order_on_time_across_servers() -> None:
    """The shared scheduler of a replay, without processes: every line goes to its
    server at first_send + event gap / speed, in event-time order across servers."""
    rng = random.Random(3)
    start_ms = 1_451_649_600_000
    lines, event_ms = [], start_ms
    for i in range(200):
        event_ms += rng.randrange(0, 3_000)
        lines.append((click(f"session{i % 17:017d}", event_ms), event_ms))
    lines.insert(50, lines.pop(40))  # late by ten records
    lines.insert(120, (b"not json", None))
    log: list[tuple[float, int, bytes]] = []
    team = [_FakeServer(log, i) for i in range(3)]
    speed = 2_000
    feed_replay([("2016-01-01.json", number, line) for number, (line, _) in enumerate(lines, 1)],
                 team, threading.Event(), Reading(), ReplayClock(speed), False, HOUR,
                 UnsentLines(Settings(), limit=1_000_000))

    event_of = dict(lines)
    assert sorted(value for _t, _s, value in log) == sorted(line for line, _ in lines)
    released = [event_of[value] for _t, _s, value in log if event_of[value] is not None]
    assert released == sorted(released)  # one order, across all servers
    assert {server for _t, server, _v in log} == {0, 1, 2}
    first_sent, first_event = log[0][0], released[0]
    lags = sorted(abs((sent - first_sent) - (event_of[value] - first_event) / 1000 / speed)
                  for sent, _s, value in log if event_of[value] is not None)
    assert lags[int(0.99 * (len(lags) - 1))] < 0.010  # seconds
    bad_at = [value for _t, _s, value in log].index(b"not json")
    assert event_of[log[bad_at - 1][2]] == event_of[lines[119][0]]  # kept its place


def test_rebase_takes_now_or_an_iso_time() -> None:
    assert _resolve_rebase(None) == (False, None)
    assert _resolve_rebase("now") == (True, None)  # fixed when the first record goes
    assert _resolve_rebase("2026-01-01T00:00:00+00:00") == (True, 1_767_225_600_000)
    assert _resolve_rebase("2026-01-01T00:00:00") == (True, 1_767_225_600_000)  # UTC
    with pytest.raises(IngestionError, match="'now' or an ISO-8601 time"):
        _resolve_rebase("yesterday")
