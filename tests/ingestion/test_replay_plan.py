"""A replay split into one run per simulated web server (the tripflow_replay DAG):
`plan_replay` fixes one schedule, each `replay_server` sends one server's share, and
runs started apart in their own threads together send every line once, in event-time
order, on time. Plus the parts without a broker: the shared anchor, the split scheduler
and the plan."""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import pytest
import xxhash

from tests.ingestion.test_produce import Received, consume_all, input_lines, session_of
from tripflow.ingestion import (
    IngestionError,
    ProduceSummary,
    ReplayAnchor,
    plan_replay,
    produce,
    replay_server,
)
from tripflow.ingestion.feed import Reading, feed_replay
from tripflow.ingestion.replay import ReplayClock
from tripflow.ingestion.server import decode_batch
from tripflow.ingestion.unsent import UnsentLines
from tripflow.records.generate import generate
from tripflow.records.parser import parse_batch
from tripflow.settings import Settings

SERVERS = 3
SPEED = 40_000.0  # the generated day (~23 h of event time) in about 2 s
LEAD_S = 3.0  # time for every run to start its server process and producer
STAGGER_S = 0.4  # runs start this far apart, as separately scheduled tasks would
# On schedule: no record is sent before it is due; the median send is within
# ON_TIME_MS after, 95% within LATE_MS (a single replay is held to that at p99 in
# test_produce; two cores shared by 3 runs, their servers and the broker get more slack).
ON_TIME_MS = 10
LATE_MS = 50
# Across runs, two records sent in the other order than their event times are a tie,
# at most TIE_MS apart (on an idle machine: 0-1 ms). Only sends made late by a busy
# machine may break that, for a few records (with both cores saturated by other work:
# up to 6% of them, by up to ~40 ms), never by more than 2 × LATE_MS. A run off the
# shared schedule would be off by the runs' stagger (400 ms).
TIE_MS = 5

_DATE = re.compile(rb'"DateCreated": "/Date\(([0-9]+)\)/"')


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated day, a couple of hundred lines, bad lines and duplicates included."""
    out = tmp_path_factory.mktemp("day")
    generate(out, start=date(2016, 1, 1), days=1, sessions_per_day=60, seed=11,
             dup_rate=0.02, bad_rate=0.04)
    return out


def click_times(lines: list[bytes]) -> dict[bytes, int]:
    """Event time of each line the parser takes as a click (what a replay schedules)."""
    import pyarrow as pa

    clicks = parse_batch(lines, context=pa.table({"row": range(len(lines))})).clicks
    return {lines[row]: int(_DATE.search(lines[row])[1])  # type: ignore[index]
            for row in clicks["row"].to_pylist()}


def server_of_line(line: bytes) -> bytes:
    """The `server` header a line must carry: its session's hash (else the line's)."""
    session = session_of(line)
    key = session.encode() if session is not None else line
    return str(xxhash.xxh64_intdigest(key) % SERVERS).encode()


def expected_union(lines: list[bytes]) -> Counter[tuple[bytes, bytes]]:
    """Every line once, with the server whose share it is: what any split must send."""
    return Counter((line, server_of_line(line)) for line in lines)


def restored(value: bytes) -> tuple[bytes, int | None]:
    """(the line as it was in the file, rebased DateCreated or None if not rebased)."""
    if b'"OriginalDateCreated"' not in value:
        return value, None
    record = json.loads(value)
    original_ms = int(record["OriginalDateCreated"][6:-2])
    new_ms = int(record["DateCreated"][6:-2])
    line = value.replace(b"/Date(%d)/" % new_ms, b"/Date(%d)/" % original_ms, 1)
    return line.replace(b', "OriginalDateCreated": "/Date(%d)/"' % original_ms, b""), new_ms


def run_staggered(jobs: list[Callable[[], ProduceSummary]]) -> list[ProduceSummary]:
    """Each job in its own thread, started STAGGER_S after the previous one."""
    results: list[ProduceSummary | BaseException | None] = [None] * len(jobs)

    def run(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except BaseException as err:
            results[index] = err

    threads = [threading.Thread(target=run, args=(i,), name=f"run-{i}") for i in range(len(jobs))]
    for thread in threads:
        thread.start()
        time.sleep(STAGGER_S)
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{thread.name} did not finish"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def check_schedule(timed: list[tuple[int, Received]], anchor: ReplayAnchor) -> None:
    """Sends follow the one shared schedule: no record before it is due (Kafka's
    timestamps are whole ms), hardly any much after, and across all runs in event-time
    order, up to ties (see the constants above)."""
    lags = []
    for event_ms, r in timed:
        due_ms = anchor.start_wall_ms + max(0, event_ms - anchor.first_event_ms) / SPEED
        assert r.timestamp_ms >= due_ms - 2, (event_ms, r.timestamp_ms - due_ms)  # not early
        lags.append(r.timestamp_ms - due_ms)
    lags.sort()
    median, p95 = statistics.median(lags), lags[int(0.95 * (len(lags) - 1))]
    assert median <= ON_TIME_MS and p95 <= LATE_MS, f"lag: median {median:.1f}, p95 {p95:.1f} ms"

    # For each record: how long after a record with a later event time it was sent.
    by_send = sorted(timed, key=lambda t: t[1].timestamp_ms)
    behind = []
    for i, (event_b, b) in enumerate(by_send):
        after = [b.timestamp_ms - a.timestamp_ms for event_a, a in by_send[:i] if event_a > event_b]
        behind.append(max(after, default=0))
    assert max(behind) <= 2 * LATE_MS, f"a record sent {max(behind)} ms out of event-time order"
    not_ties = sum(gap > TIE_MS for gap in behind)
    assert not_ties <= len(timed) // 12, (
        f"{not_ties} of {len(timed)} records sent out of event-time order by more than "
        f"{TIE_MS} ms: {sorted(behind)[-not_ties:]}")


# --- one run per server, against the broker ---------------------------------------------


def test_one_run_per_server_sends_every_line_once_in_event_time_order(
        settings: Settings, day: Path) -> None:
    lines = input_lines(day)
    times = click_times(lines)
    plans = plan_replay(day, SPEED, SERVERS, lead_s=LEAD_S)
    assert json.loads(json.dumps(plans)) == plans  # an Airflow XCom as it is
    assert [plan["server"] for plan in plans] == list(range(SERVERS))
    assert all(plan["anchor"] == plans[0]["anchor"] for plan in plans)
    anchor = ReplayAnchor.from_dict(plans[0]["anchor"])
    assert anchor.first_event_ms == min(times.values())
    assert anchor.rebase_ms == anchor.start_wall_ms

    summaries = run_staggered([partial(replay_server, plan, settings) for plan in plans])
    for index, summary in enumerate(summaries):
        assert summary.ok, summary.line()
        assert summary.only_servers == (index,) and summary.read == len(lines)
        assert summary.sent_per_server[index] == summary.sent == len(lines) - summary.skipped
        assert f"[replay, server {index} of {SERVERS}]" in summary.line()
    assert sum(summary.sent for summary in summaries) == len(lines)

    received = consume_all(settings, expected=len(lines))
    originals = [restored(r.value) for r in received]
    # Every line exactly once, on its session's server: the rebased ones put back.
    assert Counter((line, r.headers["server"]) for (line, _new), r in
                   zip(originals, received, strict=True)) == expected_union(lines)
    per_server = Counter(r.headers["server"] for r in received)
    assert [per_server[str(i).encode()] for i in range(SERVERS)] == [
        summary.sent for summary in summaries]
    sessions_of: dict[bytes, set[bytes]] = {}
    for r in received:
        if r.key is not None:
            sessions_of.setdefault(r.headers["server"], set()).add(r.key)
    assert sum(map(len, sessions_of.values())) == len(set.union(*sessions_of.values()))

    # Clicks were rebased on the shared anchor, as one run would have; bad lines not.
    timed = []
    for (line, new_ms), r in zip(originals, received, strict=True):
        if line not in times:
            assert new_ms is None and r.value == line
            continue
        event_ms = times[line]
        assert new_ms == anchor.rebase_ms + round((event_ms - anchor.first_event_ms) / SPEED)
        timed.append((event_ms, r))
    check_schedule(timed, anchor)


def test_a_different_split_of_the_servers_sends_the_same_union(
        settings: Settings, day: Path) -> None:
    """Servers 0 and 2 in one run, 1 in another (no rebase): the same records as one run
    per server (expected_union), on the same kind of shared schedule."""
    lines = input_lines(day)
    times = click_times(lines)
    plan = plan_replay([day], SPEED, SERVERS, lead_s=LEAD_S, rebase=False)[0]
    anchor = ReplayAnchor.from_dict(plan["anchor"])
    assert anchor.rebase_ms is None
    groups = [[2, 0], [1]]
    summaries = run_staggered([
        partial(produce, plan["paths"], settings, mode="replay", speed=plan["speed"],
                servers=plan["servers"], only_servers=group, anchor=anchor)
        for group in groups
    ])
    assert [summary.only_servers for summary in summaries] == [(0, 2), (1,)]
    assert all(summary.ok for summary in summaries), [s.line() for s in summaries]
    assert summaries[1].sent_per_server[0] == summaries[1].sent_per_server[2] == 0

    received = consume_all(settings, expected=len(lines))
    assert Counter((r.value, r.headers["server"]) for r in received) == expected_union(lines)
    check_schedule([(times[r.value], r) for r in received if r.value in times], anchor)


def test_bulk_runs_of_disjoint_servers_send_every_line_once(settings: Settings,
                                                            day: Path) -> None:
    lines = input_lines(day)
    first = produce([day], settings, servers=SERVERS, only_servers=[1])
    rest = produce([day], settings, servers=SERVERS, only_servers=[0, 2])
    assert first.ok and rest.ok, (first.line(), rest.line())
    assert first.sent + rest.sent == len(lines) == first.read == rest.read
    assert (first.sent_per_server[0], first.sent_per_server[2], rest.sent_per_server[1]) == (
        0, 0, 0)
    received = consume_all(settings, expected=len(lines))
    assert Counter((r.value, r.headers["server"]) for r in received) == expected_union(lines)


# --- the parts, without a broker --------------------------------------------------------


def test_clocks_sharing_an_anchor_agree_whenever_they_start() -> None:
    anchor = ReplayAnchor(first_event_ms=1_451_606_400_000,
                          start_wall_ms=time.time_ns() // 1_000_000 + 500,
                          rebase_ms=1_700_000_000_000)
    assert ReplayAnchor.from_dict(json.loads(json.dumps(anchor.to_dict()))) == anchor
    early = ReplayClock(600, anchor=anchor)
    time.sleep(0.1)
    late = ReplayClock(600, anchor=anchor)
    for event_ms in (anchor.first_event_ms, anchor.first_event_ms + 60_000,
                     anchor.first_event_ms + 3_601_234):
        assert late.due(event_ms) == pytest.approx(early.due(event_ms), abs=0.002)
        assert late.rebased_ms(event_ms) == early.rebased_ms(event_ms)
    # Due when the wall clock reads start_wall_ms; a minute of log later, 0.1 s later.
    starts_in = early.due(anchor.first_event_ms) - time.monotonic()
    assert starts_in == pytest.approx((anchor.start_wall_ms - time.time() * 1000) / 1000,
                                      abs=0.005)
    assert early.due(anchor.first_event_ms + 60_000) - early.due(
        anchor.first_event_ms) == pytest.approx(0.1)
    assert early.due(anchor.first_event_ms - 60_000) == early.due(anchor.first_event_ms)
    assert early.rebased_ms(anchor.first_event_ms + 6_000) == 1_700_000_000_010


class _FakeServer:
    """Keeps what the scheduler hands over (no process, no broker)."""

    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    def put(self, payload: bytes) -> bool:
        self.sent.extend(decode_batch(payload)[0])
        return True


def click(session: str, event_ms: int, document: int = 1) -> bytes:
    return (b'{"DateCreated": "/Date(%d)/", "SessionId": "%s", "DocumentId": %d}'
            % (event_ms, session.encode(), document))


def replayed(lines: list[bytes], anchor: ReplayAnchor, servers: list[int | None],
             speed: float = 1_000) -> tuple[dict[int, list[bytes]], Reading]:
    """What each listed server of a run sent, the others (None) passed over."""
    sent: dict[int, list[bytes]] = {i: [] for i in servers if i is not None}
    team = [_FakeServer(sent[i]) if i is not None else None for i in servers]
    reading = Reading()
    feed_replay([("2016-01-01.json", number, line) for number, line in enumerate(lines, 1)],
                 team, threading.Event(), reading, ReplayClock(speed, anchor=anchor),
                 anchor.rebase_ms is not None, 3_600_000,
                 UnsentLines(Settings(), limit=1_000_000), now_ms=anchor.start_wall_ms)
    return sent, reading


def log_lines() -> list[bytes]:
    """Clicks of a few sessions, some read late, and bad lines among them."""
    start = 1_451_649_600_000
    lines = [click(f"session{i % 7:017d}", start + 1_000 * i, i) for i in range(60)]
    lines.insert(30, lines.pop(20))  # late by ten records
    lines[40:40] = [b"not json", click("session00000000000009", 0, 1)]  # bad time too
    return lines


def test_runs_sharing_an_anchor_rebase_identically() -> None:
    """Two runs with one anchor, started apart, give every click the same new time:
    rebase_ms + (event time - first event time) / speed."""
    lines = log_lines()
    anchor = ReplayAnchor(first_event_ms=1_451_649_600_000,
                          start_wall_ms=time.time_ns() // 1_000_000 - 3_600_000,  # all due
                          rebase_ms=1_700_000_000_000)
    first, _ = replayed(lines, anchor, [0, 1])
    time.sleep(0.2)
    second, _ = replayed(lines, anchor, [0, 1])
    assert first == second
    values = first[0] + first[1]
    assert len(values) == len(lines)
    for value in values:
        if b"OriginalDateCreated" not in value:  # the two bad lines
            assert value in (b"not json", click("session00000000000009", 0, 1))
            continue
        record = json.loads(value)
        original_ms = int(record["OriginalDateCreated"][6:-2])
        assert int(record["DateCreated"][6:-2]) == 1_700_000_000_000 + round(
            (original_ms - anchor.first_event_ms) / 1_000)


def test_a_split_run_sends_each_server_what_a_full_run_sends_in_the_same_order() -> None:
    lines = log_lines()
    anchor = ReplayAnchor(1_451_649_600_000, time.time_ns() // 1_000_000 - 3_600_000)
    full, reading = replayed(lines, anchor, [0, 1, 2])
    assert reading.skipped == 0 and sum(map(len, full.values())) == len(lines)
    only_one, reading_one = replayed(lines, anchor, [None, 1, None])
    the_rest, reading_rest = replayed(lines, anchor, [0, None, 2])
    assert only_one == {1: full[1]} and the_rest == {0: full[0], 2: full[2]}
    assert reading_one.read == reading_rest.read == len(lines)
    assert reading_one.skipped == len(full[0]) + len(full[2])
    assert all(full.values())


def test_a_run_on_a_future_anchor_waits_for_its_start() -> None:
    lines = [click("sessiona0000000000000", 1_451_649_600_000),
             click("sessionb0000000000000", 1_451_649_600_000 + 60_000)]
    start_ms = time.time_ns() // 1_000_000 + 300
    began = time.monotonic()
    sent, _ = replayed(lines, ReplayAnchor(1_451_649_600_000, start_ms), [0], speed=600)
    assert len(sent[0]) == 2
    assert time.time_ns() // 1_000_000 >= start_ms + 100 - 2  # the second: a minute / 600
    assert time.monotonic() - began < 2


# --- the plan ---------------------------------------------------------------------------


def test_plan_finds_the_start_in_the_first_file_with_a_click(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "2016-01-01.json").write_bytes(b"not json\n" + click("s1", 5) + b"\n")  # too old
    (folder / "2016-01-02.json").write_bytes(
        click("s2", 1_451_700_000_000) + b"\n" + click("s3", 1_451_690_000_000) + b"\n")
    # Never read: an earlier click in a later file does not move the start.
    (folder / "2016-01-03.json").write_bytes(click("s4", 1_451_600_000_000) + b"\n")
    before = time.time_ns() // 1_000_000
    plans = plan_replay(str(folder), 120, 2, lead_s=1.5, rebase=False)
    after = time.time_ns() // 1_000_000
    assert [plan["server"] for plan in plans] == [0, 1]
    assert plans[0] == {**plans[1], "server": 0}
    assert plans[0]["paths"] == [str(folder.resolve())]
    assert (plans[0]["speed"], plans[0]["servers"]) == (120.0, 2)
    anchor = plans[0]["anchor"]
    assert anchor["first_event_ms"] == 1_451_690_000_000 and anchor["rebase_ms"] is None
    assert before + 1_500 <= anchor["start_wall_ms"] <= after + 1_500 + 200


def test_plan_and_split_arguments_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "2016-01-01.json").write_bytes(b"not json\n")
    with pytest.raises(IngestionError, match="no click"):
        plan_replay(folder, 60, 2)
    with pytest.raises(IngestionError, match="no such file"):
        plan_replay(tmp_path / "missing", 60, 2)
    with pytest.raises(IngestionError, match="speed"):
        plan_replay(folder, 0, 2)
    with pytest.raises(IngestionError, match="servers"):
        plan_replay(folder, 60, 0)
    with pytest.raises(IngestionError, match="not a replay plan"):
        replay_server({"paths": [str(folder)]}, Settings(home=tmp_path))

    # Rejected before any process starts or any broker is asked.
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1")
    anchor = ReplayAnchor(0, 0, None)
    for kwargs, message in [
        ({"servers": 3, "only_servers": [3]}, "3 is not a server"),
        ({"servers": 3, "only_servers": []}, "no server"),
        ({"anchor": anchor}, "only applies to --mode replay"),
        ({"mode": "replay", "anchor": anchor, "rebase": "now"}, "anchor.rebase_ms"),
    ]:
        with pytest.raises(IngestionError, match=message):
            produce([folder], settings, **kwargs)  # type: ignore[arg-type]
