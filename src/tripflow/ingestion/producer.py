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
  Ctrl-C (or SIGTERM) stops reading, lets the servers flush what they hold, and reports.

Values are the lines' bytes unchanged (bad lines too: downstream quarantines them);
only a replay with `rebase` rewrites DateCreated of clicks, adding OriginalDateCreated.
"""

from __future__ import annotations

import fcntl
import json
import logging
import operator
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain, islice
from pathlib import Path
from typing import Any

from xxhash import xxh64_intdigest

import tripflow
from tripflow.ingestion.admin import (
    DEFAULT_CONNECT_TIMEOUT_S,
    IngestionError,
    TopicInfo,
    ensure_topic,
    message_limit,
)
from tripflow.ingestion.lines import (
    identify,
    inspect_line,
    is_click,
    rebased_line,
    server_of,
)
from tripflow.ingestion.replay import ONE_DAY_MS, ReorderBuffer, ReplayAnchor, ReplayClock
from tripflow.ingestion.server import ServerReport, ServerSpec, encode_batch, write_frame
from tripflow.ingestion.unsent import HEADROOM, UnsentLines
from tripflow.messaging.config import producer_config
from tripflow.records.dedup import dedup_key
from tripflow.records.readers import LineCounts, LogLine, iter_log_lines
from tripflow.settings import Settings

_log = logging.getLogger(__name__)

BATCH = 2000  # lines per hand-over to a server in bulk mode
# What a damaged file or archive raises while it is read.
_INPUT_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error)
FLUSH_ON_STOP_S = 30.0  # after Ctrl-C: how long servers wait for in-flight deliveries
SERVER_START_TIMEOUT_S = 60.0
PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask for, by default


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


class _ServerProcess:
    """The reader's side of one server process (see server.py for the protocol)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.index = spec.index
        self.report = ServerReport()
        # Kept until finish()/kill(): read only if the server breaks.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        env = dict(os.environ)
        # The child finds this very tripflow, however the caller set up its sys.path.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(tripflow.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tripflow.ingestion.server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            start_new_session=True,  # Ctrl-C reaches the reader only; it tells the servers
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        with suppress(AttributeError, OSError):  # Linux: a batch in a few writes, not 15
            fcntl.fcntl(self._stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.ready = threading.Event()
        self._reports = threading.Thread(target=self._read_reports, daemon=True,
                                         name=f"tripflow-server-{spec.index}-reports")
        self._reports.start()
        self.put(pickle.dumps(asdict(spec)))  # plain values: the child rebuilds the spec

    def _read_reports(self) -> None:
        try:
            for line in self._stdout:
                try:
                    self.report = ServerReport(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # not ours (a library printing): ignore
                self.ready.set()
        finally:
            self.ready.set()  # ended: nobody should wait for it any more

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server has its producer (so a replay's first record is not
        late because a process was still starting)."""
        if not self.ready.wait(timeout_s) or self.process.poll() is not None:
            detail = self._failure_detail()
            self.kill()
            raise IngestionError(f"producer server {self.index} did not start: {detail}")

    def put(self, payload: bytes) -> bool:
        """Hand a frame over (blocks while the server is busy); False once it is gone."""
        try:
            write_frame(self._stdin, payload)
            return True
        except (BrokenPipeError, ValueError, OSError):
            return False

    def end_input(self) -> None:
        try:
            with suppress(BrokenPipeError, ValueError, OSError):
                self._stdin.write(b"\0" * 8)  # the empty frame: end of input
                self._stdin.flush()
        finally:
            with suppress(BrokenPipeError, ValueError, OSError):
                self._stdin.close()

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def finish(self) -> ServerReport:
        """Wait for the server to end; its final report."""
        self.end_input()
        self.process.wait()
        self._reports.join()
        if not self.report.final:
            self.report.crash = (f"server {self.index} ended without a report: "
                                 f"{self._failure_detail()}")
        self._stderr.close()
        return self.report

    def _failure_detail(self) -> str:
        code = self.process.poll()
        self._stderr.seek(0)
        detail = self._stderr.read().decode(errors="replace").strip()[-2000:]
        state = "still running" if code is None else f"exit code {code}"
        return f"{state}{': ' + detail if detail else ''}"

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.end_input()
        self._stderr.close()


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
    chosen = _chosen_servers(only_servers, servers)
    counts = LineCounts()
    lines = _open_input([paths] if isinstance(paths, str | Path) else list(paths), counts,
                        settings.home_dir)

    overrides: dict[str, Any] = {
        # The Java clients' partitioner: a key lands on the same partition whichever
        # server (or language) sends it.
        "partitioner": "murmur2_random",
        "log_level": 0,  # failures arrive as delivery reports and fatal errors instead
    }
    if mode is Mode.REPLAY:
        overrides["linger.ms"] = 5  # a replay is about freshness, not batch size
    specs = [
        ServerSpec(i, settings.topic, producer_config(
            settings, **{**overrides, "client.id": f"tripflow-server-{i}"}), FLUSH_ON_STOP_S)
        for i in chosen
    ]
    # Started first: they boot while the topic is checked.
    running = [_ServerProcess(spec) for spec in specs]
    try:
        topic = ensure_topic(settings, timeout_s=connect_timeout_s)
        unsent = UnsentLines(settings, message_limit(settings, timeout_s=connect_timeout_s))
        for server in running:
            server.wait_ready(SERVER_START_TIMEOUT_S)
    except BaseException:
        for server in running:
            server.kill()
        raise
    # By server index; None: another run's share (its lines are read and passed over).
    team: list[_ServerProcess | None] = [None] * servers
    for server in running:
        team[server.index] = server
    if anchor is not None:
        late_s = (time.time_ns() // 1_000_000 - anchor.start_wall_ms) / 1000
        if late_s > 1:
            _log.warning("replay run started %.1f s after the shared start: what is "
                         "already due is sent at once until it catches up", late_s)

    stopping = threading.Event()
    reading = _Reading()
    started = time.monotonic()

    def snapshot() -> ProduceProgress:
        reports = [server.report for server in running]
        return ProduceProgress(
            mode, servers, reading.read, sum(r.sent for r in reports),
            sum(r.delivered for r in reports), sum(r.failed for r in reports),
            time.monotonic() - started, reading.file, reading.last_event_ms, stopping.is_set(),
            skipped=reading.skipped,
        )

    finished = threading.Event()
    interrupts = _Interrupts()
    watcher = threading.Thread(
        target=_watch, name="tripflow-produce-watch", daemon=True,
        args=(progress, snapshot, finished, interrupts, stop, stopping, running),
    )
    reports: list[ServerReport] = []
    input_error: Exception | None = None
    with _signals_counted(interrupts):
        watcher.start()
        try:
            if mode is Mode.BULK:
                _feed_bulk(lines, team, stopping, reading, unsent)
            elif anchor is not None:
                # "Now" for the click test is the shared start, so every run sharing
                # the anchor schedules (and rebases) the very same lines.
                _feed_replay(lines, team, stopping, reading, ReplayClock(speed, anchor=anchor),
                             do_rebase, reorder_horizon_ms, unsent,
                             now_ms=anchor.start_wall_ms)
            else:
                clock = ReplayClock(speed, rebase_ms)
                _feed_replay(lines, team, stopping, reading, clock, do_rebase,
                             reorder_horizon_ms, unsent)
        except _INPUT_ERRORS as err:
            input_error = err  # a file broke mid-way: what was read still gets delivered
        finally:
            reports = [server.finish() for server in running]
            finished.set()
            watcher.join()
            unsent.flush()
    seconds = time.monotonic() - started

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


@dataclass
class _Reading:
    """How far the reader is, for progress (written by the reading thread only)."""

    read: int = 0
    skipped: int = 0  # lines of servers this run does not send for
    file: str | None = None
    first_event_ms: int | None = None
    last_event_ms: int | None = None


def _open_input(paths: list[str | Path], counts: LineCounts,
                spool_dir: Path) -> Iterator[LogLine]:
    """The reader, started: a missing or unplaceable path fails here, before anything
    is sent or shown."""
    if not paths:
        raise IngestionError("no input: give day files, folders of them or a logs.tar.gz")
    # An archive's members that come before their turn wait on disk under TRIPFLOW_HOME.
    lines = iter_log_lines(paths, counts, spool_dir=spool_dir)
    try:
        first = next(lines, None)
    except (*_INPUT_ERRORS, ValueError) as err:
        raise IngestionError(
            f"cannot read the input: {err}. Give day files (YYYY-MM-DD.json), folders of "
            "them, or a logs.tar.gz."
        ) from None
    return iter(()) if first is None else chain([first], lines)


def _feed_bulk(lines: Iterable[LogLine], team: Sequence[_ServerProcess | None],
               stop: threading.Event, reading: _Reading, unsent: UnsentLines) -> None:
    """The load balancer of a bulk run: every line to its session's server, in order
    (a line of a server not run here, None in `team`, is counted and passed over; a
    line too large for the topic is quarantined instead).

    Works a chunk of lines at a time with comprehensions rather than one Python loop
    turn per line: at 10⁵ lines/s the loop's own bookkeeping is a real cost.
    """
    servers = len(team)
    # Per server, the columns of its next batch: values, keys, dedup keys (b"": none).
    pending: list[tuple[list[bytes], list[bytes], list[bytes]]] = [
        ([], [], []) for _ in range(servers)
    ]
    lines = iter(lines)
    while chunk := list(islice(lines, BATCH)):
        values = [line for _file, _number, line in chunk]
        identities = list(map(identify, values))
        keys = [key or b"" for key, _dedup in identities]
        dedups = [dedup or b"" for _key, dedup in identities]
        reading.read += len(chunk)
        reading.file = chunk[-1][0]
        if 2 * max(map(len, values)) + HEADROOM > unsent.limit:  # a line may not fit (rare)
            values, keys, dedups = _set_aside_too_large(chunk, values, keys, dedups, team,
                                                        unsent)
        if servers == 1:
            shares = [(values, keys, dedups)]
        else:
            # server_of(), for a whole chunk: the session's hash, or the line's.
            targets = [xxh64_intdigest(key or value) % servers
                       for key, value in zip(keys, values, strict=True)]
            shares = [
                tuple([item for item, target in zip(column, targets, strict=True)
                       if target == index] for column in (values, keys, dedups))
                for index in range(servers)
            ]
        for index, (share_values, share_keys, share_dedups) in enumerate(shares):
            server = team[index]
            if server is None:
                reading.skipped += len(share_values)
                continue
            batch_values, batch_keys, batch_dedups = pending[index]
            batch_values += share_values
            batch_keys += share_keys
            batch_dedups += share_dedups
            if len(batch_values) >= BATCH:
                if not server.put(encode_batch(*pending[index])):
                    return
                pending[index] = ([], [], [])
        if stop.is_set():
            return
    for server, batch in zip(team, pending, strict=True):
        if server is not None and batch[0] and not server.put(encode_batch(*batch)):
            return


def _set_aside_too_large(chunk: list[LogLine], values: list[bytes], keys: list[bytes],
                         dedups: list[bytes], team: Sequence[_ServerProcess | None],
                         unsent: UnsentLines) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The chunk's columns without the lines too large for the topic, which go to the
    quarantine (those of this run's servers only: another run's share is its own)."""
    keep = []
    for (file, number, value), key in zip(chunk, keys, strict=True):
        if unsent.fits(value, key) or team[server_of(value, key or None, len(team))] is None:
            keep.append(True)  # sent, or passed over as another run's share
        else:
            unsent.add(file, number, value)
            keep.append(False)
    return tuple([item for item, kept in zip(column, keep, strict=True) if kept]
                 for column in (values, keys, dedups))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Scheduled:
    """A line waiting in the replay buffer. `click`: it has an identity and a sane event
    time (the parser would take it), so it is scheduled and rebased by its own time; any
    other line keeps its place in the file."""

    line: bytes
    session_id: str | None
    dedup_key: str | None
    event_ms: int | None
    document_id: int | None
    click: bool
    file: str
    line_number: int


def _feed_replay(lines: Iterable[LogLine], team: Sequence[_ServerProcess | None],
                 stop: threading.Event, reading: _Reading, clock: ReplayClock, rebase: bool,
                 horizon_ms: int, unsent: UnsentLines, *, now_ms: int | None = None) -> None:
    """The shared scheduler of a replay: lines in event-time order, each when due.

    Every line is read and buffered, also those of servers not run here (None in
    `team`): the buffer then releases in the same order as in a full run, and those
    lines are passed over without waiting. `now_ms`: the reading time that decides
    which event times are plausible (default: now).
    """
    servers = len(team)
    buffer: ReorderBuffer[_Scheduled] = ReorderBuffer(horizon_ms)
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000

    def send(event_ms: int, item: _Scheduled) -> bool:
        session_key = item.session_id.encode() if item.session_id is not None else None
        server = team[server_of(item.line, session_key, servers)]
        if server is None:
            reading.skipped += 1
            return True
        if not unsent.fits(item.line, session_key):
            unsent.add(item.file, item.line_number, item.line)
            return True
        wait = clock.due(event_ms) - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return False
        value, key = item.line, item.dedup_key
        if rebase and item.click:  # bad lines go as they are
            # From its own event time: a click sent late keeps its (scaled) lateness.
            original_ms: int = item.event_ms  # type: ignore[assignment]
            new_ms = clock.rebased_ms(original_ms)
            value = rebased_line(item.line, original_ms, new_ms)
            key = dedup_key(item.session_id, item.document_id, new_ms)  # type: ignore[arg-type]
        if reading.first_event_ms is None:
            reading.first_event_ms = event_ms
        reading.last_event_ms = event_ms
        return server.put(encode_batch([value], [session_key or b""],
                                       [key.encode() if key is not None else b""]))

    for file, number, line in lines:
        reading.read += 1
        reading.file = file
        info = inspect_line(line)
        item = _Scheduled(line, *info, click=is_click(info, now_ms), file=file,
                          line_number=number)
        for event_ms, ready in buffer.push(item.event_ms if item.click else None, item):
            if not send(event_ms, ready):
                return
        if stop.is_set():
            return
    for event_ms, ready in buffer.drain():
        if not send(event_ms, ready):
            return


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
           stopping: threading.Event, team: list[_ServerProcess]) -> None:
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
