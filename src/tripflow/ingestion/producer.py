"""The producer: replays TripClick log lines into the raw-log topic from N simulated
web servers, in bulk (as fast as possible) or in event-time order at a chosen speed.

Shape of a run (`produce`):
- The input is read once, in file (date) order, by the calling process, which plays
  the sticky load balancer in front of the web servers: it reads each line's SessionId
  and hands the line to server `xxh64(SessionId) % N` (a line without one: a hash of
  the line's bytes). So together the servers send every line exactly once.
- Each server is a process with its own idempotent producer (acks=all, lz4), as separate
  web servers each have their own client (see `server.py`). A session always goes
  through one server and, keyed by SessionId, to one partition: its order is kept.
- Bulk: lines go to the servers in batches as fast as the brokers take them.
  Replay: one scheduler for all servers releases lines in event-time order through a
  bounded reorder buffer and hands each to its server when the replay clock says so.
- A run may send only some servers' shares (`only_servers`): it still reads and
  schedules every line, so that each line lands in the same share and (with a shared
  `anchor`) at the same moment as in a full run, but starts processes only for its
  servers and passes over the other lines. Runs of disjoint server sets that together
  list every server send every line exactly once; with one ReplayAnchor they follow
  one event-time schedule (see plan.py: one Airflow task per web server).
- Every produce() is counted as sent, every delivery report as delivered or failed.
  Ctrl-C (or SIGTERM) stops reading, lets the servers flush what they hold, and reports;
  a second one stops waiting for that flush.

The reading and the hand-over to servers are in feed.py; a server process in
server.py (its side) and server_process.py (the reader's side).

Values are the lines' bytes unchanged (bad lines too: downstream quarantines them);
only a replay with `rebase` rewrites DateCreated of clicks, adding OriginalDateCreated.
"""

from __future__ import annotations

import logging
import operator
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tripflow.ingestion.admin import (
    DEFAULT_CONNECT_TIMEOUT_S,
    IngestionError,
    TopicInfo,
    ensure_topic,
    message_limit,
)
from tripflow.ingestion.feed import INPUT_ERRORS, Reading, feed_bulk, feed_replay, open_input
from tripflow.ingestion.replay import ONE_DAY_MS, ReplayAnchor, ReplayClock
from tripflow.ingestion.server import ServerReport, ServerSpec
from tripflow.ingestion.server_process import ServerProcess
from tripflow.ingestion.unsent import UnsentLines
from tripflow.messaging.config import producer_config
from tripflow.records.readers import LineCounts
from tripflow.settings import Settings

_log = logging.getLogger(__name__)

FLUSH_ON_STOP_S = 30.0  # after Ctrl-C: how long servers wait for in-flight deliveries
SERVER_START_TIMEOUT_S = 60.0
BULK_LINGER_MS = 100  # a bulk run's batching delay (a replay's is 5 ms)


class Mode(StrEnum):
    BULK = "bulk"
    REPLAY = "replay"


@dataclass(frozen=True)
class ProduceProgress:
    """A snapshot of a run, handed to the `progress` callback a few times a second."""

    mode: Mode
    servers: int
    read: int  # lines read from the input
    sent: int  # handed to a producer
    delivered: int  # acknowledged by the brokers (acks=all)
    failed: int  # failed for good
    seconds: float
    file: str | None  # file being read
    event_ms: int | None  # replay: event time of the last line handed to a server
    stopping: bool  # interrupted: flushing what is in flight
    skipped: int = 0  # read, but another run's share (only_servers)


@dataclass(frozen=True)
class ProduceSummary:
    """What a run did. `unconfirmed` records were sent but had no delivery report when
    the run ended (only after an interrupt whose flush did not finish)."""

    topic: TopicInfo
    mode: Mode
    servers: int
    read: int
    sent: int
    delivered: int
    failed: int
    bytes_sent: int
    seconds: float
    interrupted: bool
    sent_per_server: tuple[int, ...]
    errors: dict[str, int] = field(default_factory=dict)  # delivery error -> records
    first_event_ms: int | None = None  # replay: event-time span handed to the servers
    last_event_ms: int | None = None
    fatal_error: str | None = None  # a producer stopped for good (e.g. idempotence lost)
    # Set when the run sent only these servers' shares; `skipped` lines were read but
    # belong to the other servers (another run sends them). sent_per_server still has
    # one entry per server (0 for those not run here).
    only_servers: tuple[int, ...] | None = None
    skipped: int = 0
    too_large: int = 0  # lines over the topic's message limit: quarantined, not sent
    punctuation: int = 0  # lines holding no record (blank, or only `[`, `]`, `,`): skipped

    @property
    def unconfirmed(self) -> int:
        return self.sent - self.delivered - self.failed

    @property
    def records_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Every line read (of this run's share) was delivered, and the run was not cut
        short."""
        return (not self.interrupted and self.fatal_error is None and self.failed == 0
                and self.delivered == self.read - self.skipped - self.too_large)

    def line(self) -> str:
        """The one-line summary a run ends with."""
        if self.only_servers is None:
            plural = "s" if self.servers != 1 else ""
            who = f"{self.servers} server{plural}"
        else:
            plural = "s" if len(self.only_servers) != 1 else ""
            who = f"server{plural} {','.join(map(str, self.only_servers))} of {self.servers}"
        text = (
            f"produced to {self.topic.name}: sent {self.sent:,}, delivered {self.delivered:,}, "
            f"failed {self.failed:,}, {self.records_per_s:,.0f} records/s "
            f"({self.mb_per_s:,.1f} MB/s) in {self.seconds:,.1f} s "
            f"[{self.mode.value}, {who}]"
        )
        if self.too_large:
            text += f"; {self.too_large:,} too large (quarantined)"
        if self.punctuation:
            text += f"; {self.punctuation:,} lines without a record skipped"
        if self.only_servers is not None:
            text += f"; {self.skipped:,} lines left to the other servers"
        if self.interrupted:
            text += f"; interrupted after reading {self.read:,} lines"
        if self.unconfirmed:
            text += f"; {self.unconfirmed:,} unconfirmed (no delivery report in time)"
        if self.fatal_error:
            text += f"; producer stopped: {self.fatal_error}"
        return text


def _resolve_rebase(rebase: str | datetime | None) -> tuple[bool, int | None]:
    """(rebase?, epoch ms of the first record: None for "now", fixed at the first send)."""
    if rebase is None:
        return False, None
    if isinstance(rebase, datetime):
        when = rebase if rebase.tzinfo else rebase.replace(tzinfo=UTC)
        return True, int(when.timestamp() * 1000)
    if rebase.strip().lower() == "now":
        return True, None
    try:
        return _resolve_rebase(datetime.fromisoformat(rebase.strip()))
    except ValueError:
        raise IngestionError(f"--rebase takes 'now' or an ISO-8601 time, not {rebase!r}") from None


def _chosen_servers(only_servers: Sequence[int] | None, servers: int) -> tuple[int, ...]:
    """The servers this run sends for, in order (all of them by default)."""
    if only_servers is None:
        return tuple(range(servers))
    chosen: set[int] = set()
    for given in only_servers:
        try:  # any integer (numpy's too), but not True/False or "1"
            index = -1 if isinstance(given, bool) else operator.index(given)
        except TypeError:
            index = -1
        if not 0 <= index < servers:
            raise IngestionError(f"only_servers: {given!r} is not a server of this run "
                                 f"(0 to {servers - 1} with --servers {servers})")
        chosen.add(index)
    if not chosen:
        raise IngestionError("only_servers lists no server: nothing to send")
    return tuple(sorted(chosen))


def produce(
    paths: Sequence[str | Path] | str | Path,
    settings: Settings,
    *,
    mode: Mode | str = Mode.BULK,
    speed: float = 1.0,
    rebase: str | datetime | None = None,
    servers: int = 2,
    progress: Callable[[ProduceProgress], None] | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    reorder_horizon_ms: int = ONE_DAY_MS,
    stop: threading.Event | None = None,
    only_servers: Sequence[int] | None = None,
    anchor: ReplayAnchor | None = None,
) -> ProduceSummary:
    """Send every line of `paths` (day files, folders of them, logs.tar.gz) to
    settings.topic, creating the topic first if needed.

    mode "bulk": as fast as possible, each session's lines in file order.
    mode "replay": in event-time order, a gap of g ms between two records taking g/speed
        ms of wall time, for all servers together; `rebase="now"` (or a datetime) moves
        DateCreated of clicks so the first is then (the original kept in
        OriginalDateCreated), so a replay looks live.
    servers: simulated web servers, each a process with its own producer.
    progress: called with a ProduceProgress a few times a second and once at the end.
    stop: set it to end the run early (SIGINT/SIGTERM do so when produce runs in the
        main thread); what is in flight is flushed and the summary says what arrived.
    reorder_horizon_ms: replay only; how late a record may be and still be put back in
        event-time order (memory holds that much event time of records).
    only_servers: send only these servers' shares (lines still go to share
        `xxh64(SessionId) % servers`); processes start for these servers only. Runs
        whose lists together cover 0..servers-1 once send every line exactly once.
    anchor: replay only; a schedule shared with other runs (ReplayAnchor): a record of
        event time e is due at anchor.start_wall_ms + (e - first_event_ms) / speed,
        and is rebased (when anchor.rebase_ms is set; then `rebase` must be None) to
        rebase_ms + (e - first_event_ms) / speed. Records due before the run gets to
        them are sent at once.

    Raises BrokerUnreachable (no broker within connect_timeout_s) or IngestionError
    (bad arguments or input) before anything is sent; records that fail to be
    delivered are counted in the summary instead.
    """
    mode = Mode(mode)
    do_rebase, rebase_ms = _check_arguments(mode, servers, speed, rebase, anchor)
    chosen = _chosen_servers(only_servers, servers)
    counts = LineCounts()
    lines = open_input([paths] if isinstance(paths, str | Path) else list(paths), counts,
                       settings.home_dir)
    running, topic, unsent = _start_servers(settings, mode, chosen, connect_timeout_s)
    # By server index; None: another run's share (its lines are read and passed over).
    team: list[ServerProcess | None] = [None] * servers
    for server in running:
        team[server.index] = server
    _warn_if_late(anchor)

    stopping = threading.Event()
    reading = Reading()
    started = time.monotonic()

    def snapshot() -> ProduceProgress:
        reports = [server.report for server in running]
        return ProduceProgress(
            mode, servers, reading.read, sum(r.sent for r in reports),
            sum(r.delivered for r in reports), sum(r.failed for r in reports),
            time.monotonic() - started, reading.file, reading.last_event_ms, stopping.is_set(),
            skipped=reading.skipped,
        )

    def feed() -> None:
        if mode is Mode.BULK:
            feed_bulk(lines, team, stopping, reading, unsent)
        elif anchor is not None:
            # "Now" for the click test is the shared start, so every run sharing the
            # anchor schedules (and rebases) the very same lines.
            feed_replay(lines, team, stopping, reading, ReplayClock(speed, anchor=anchor),
                        do_rebase, reorder_horizon_ms, unsent, now_ms=anchor.start_wall_ms)
        else:
            feed_replay(lines, team, stopping, reading, ReplayClock(speed, rebase_ms),
                        do_rebase, reorder_horizon_ms, unsent)

    reports, input_error = _run_feed(feed, running, unsent, progress, snapshot, stop,
                                     stopping)
    seconds = time.monotonic() - started
    _raise_failures(reports, input_error, reading)
    if progress is not None:
        progress(snapshot())
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report.errors)
    sent_by_index = {server.index: report.sent
                     for server, report in zip(running, reports, strict=True)}
    return ProduceSummary(
        topic=topic, mode=mode, servers=servers, read=reading.read,
        sent=sum(r.sent for r in reports), delivered=sum(r.delivered for r in reports),
        failed=sum(r.failed for r in reports), bytes_sent=sum(r.bytes for r in reports),
        seconds=seconds, interrupted=stopping.is_set(),
        sent_per_server=tuple(sent_by_index.get(i, 0) for i in range(servers)),
        errors=dict(errors),
        first_event_ms=reading.first_event_ms, last_event_ms=reading.last_event_ms,
        fatal_error=next((r.fatal for r in reports if r.fatal), None),
        only_servers=None if only_servers is None else chosen, skipped=reading.skipped,
        too_large=unsent.count, punctuation=counts.no_record,
    )


def _check_arguments(mode: Mode, servers: int, speed: float, rebase: str | datetime | None,
                     anchor: ReplayAnchor | None) -> tuple[bool, int | None]:
    """Fail on bad arguments before anything starts; (rebase?, rebase epoch ms)."""
    if servers < 1:
        raise IngestionError("--servers must be at least 1")
    if not speed > 0:
        raise IngestionError("--speed must be a positive number")
    do_rebase, rebase_ms = _resolve_rebase(rebase)
    if do_rebase and mode is not Mode.REPLAY:
        raise IngestionError("--rebase only applies to --mode replay")
    if anchor is not None:
        if mode is not Mode.REPLAY:
            raise IngestionError("a replay anchor only applies to --mode replay")
        if do_rebase:  # one source of truth, so runs sharing the anchor cannot disagree
            raise IngestionError("with a shared replay anchor, rebasing is set by "
                                 "anchor.rebase_ms: leave rebase=None")
        do_rebase = anchor.rebase_ms is not None
    return do_rebase, rebase_ms


def _start_servers(settings: Settings, mode: Mode, chosen: tuple[int, ...],
                   connect_timeout_s: float) -> tuple[list[ServerProcess], TopicInfo, UnsentLines]:
    """The chosen servers' processes, started first (they boot while the topic is
    checked), the topic, and the collector of lines too large for it."""
    overrides: dict[str, Any] = {
        # The Java clients' partitioner: a key lands on the same partition whichever
        # server (or language) sends it.
        "partitioner": "murmur2_random",
        "log_level": 0,  # failures arrive as delivery reports and fatal errors instead
    }
    if mode is Mode.REPLAY:
        overrides["linger.ms"] = 5  # a replay is about freshness, not batch size
    else:
        # Bulk: fewer, larger batches (≈5x: ~1,300 records per partition and server
        # at full speed): the broker's work per batch (request, validation, append,
        # index) halved its CPU per record (bench/bench_produce.py, issue 20).
        overrides["linger.ms"] = BULK_LINGER_MS
    running: list[ServerProcess] = []
    try:
        for i in chosen:
            running.append(ServerProcess(ServerSpec(i, settings.topic, producer_config(
                settings, **{**overrides, "client.id": f"tripflow-server-{i}"}),
                FLUSH_ON_STOP_S)))
        topic = ensure_topic(settings, timeout_s=connect_timeout_s)
        unsent = UnsentLines(settings, message_limit(settings, timeout_s=connect_timeout_s))
        for server in running:
            server.wait_ready(SERVER_START_TIMEOUT_S)
    except BaseException:
        for server in running:
            server.kill()
        raise
    return running, topic, unsent


def _warn_if_late(anchor: ReplayAnchor | None) -> None:
    if anchor is not None:
        late_s = (time.time_ns() // 1_000_000 - anchor.start_wall_ms) / 1000
        if late_s > 1:
            _log.warning("replay run started %.1f s after the shared start: what is "
                         "already due is sent at once until it catches up", late_s)


def _run_feed(feed: Callable[[], None], running: list[ServerProcess], unsent: UnsentLines,
              progress: Callable[[ProduceProgress], None] | None,
              snapshot: Callable[[], ProduceProgress], caller_stop: threading.Event | None,
              stopping: threading.Event) -> tuple[list[ServerReport], Exception | None]:
    """Feed the servers (with signals counted and a watcher for progress and stops), then
    end them: their final reports, and the input error that cut the reading short."""
    finished = threading.Event()
    interrupts = _Interrupts()
    watcher = threading.Thread(
        target=_watch, name="tripflow-produce-watch", daemon=True,
        args=(progress, snapshot, finished, interrupts, caller_stop, stopping, running),
    )
    reports: list[ServerReport] = []
    input_error: Exception | None = None
    with _signals_counted(interrupts):
        watcher.start()
        try:
            feed()
        except INPUT_ERRORS as err:
            input_error = err  # a file broke mid-way: what was read still gets delivered
        finally:
            reports = [server.finish() for server in running]
            finished.set()
            watcher.join()
            unsent.flush()
    return reports, input_error


def _raise_failures(reports: list[ServerReport], input_error: Exception | None,
                    reading: Reading) -> None:
    crashes = [r.crash for r in reports if r.crash]
    if crashes:
        raise IngestionError(f"a producer server failed: {crashes[0]}")
    if input_error is not None:
        delivered = sum(r.delivered for r in reports)
        raise IngestionError(
            f"reading the input failed after {reading.read:,} lines in {reading.file} "
            f"({input_error}); {delivered:,} records were delivered before that. Fix or "
            "replace the file and run again: downstream deduplicates what is sent twice."
        )


class _Interrupts:
    """Counts SIGINT/SIGTERM while a run is on. The handler only bumps a number: it may
    run between any two bytecodes of the main thread, even inside a lock the events use,
    so the watcher thread is the one that sets them."""

    def __init__(self) -> None:
        self.count = 0

    def handle(self, _signum: int, _frame: object) -> None:
        self.count += 1


def _watch(progress: Callable[[ProduceProgress], None] | None,
           snapshot: Callable[[], ProduceProgress], finished: threading.Event,
           interrupts: _Interrupts, caller_stop: threading.Event | None,
           stopping: threading.Event, team: list[ServerProcess]) -> None:
    """Turns interrupts (and the caller's stop event) into stop/abort for the reader
    and the servers, and reports progress a few times a second."""
    last_report = 0.0
    aborted = False
    while not finished.wait(0.05):
        if not stopping.is_set() and (
            interrupts.count or (caller_stop is not None and caller_stop.is_set())
        ):
            stopping.set()  # first: stop reading, flush what is in flight, report
            for server in team:
                server.signal(signal.SIGUSR1)
        if interrupts.count >= 2 and not aborted:
            aborted = True  # second: stop waiting for the flush
            for server in team:
                server.signal(signal.SIGUSR2)
        if progress is not None and time.monotonic() - last_report >= 0.25:
            last_report = time.monotonic()
            try:
                progress(snapshot())
            except Exception:  # a broken display must not stop the run (or Ctrl-C)
                _log.exception("progress callback failed; no more progress is shown")
                progress = None


@contextmanager
def _signals_counted(interrupts: _Interrupts) -> Iterator[None]:
    """While a run is on, SIGINT and SIGTERM are counted instead of raising (only in the
    main thread, Python's rule; elsewhere the caller's `stop` event ends a run)."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, interrupts.handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
