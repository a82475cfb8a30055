"""The reader of a producer run: the input's lines, handed to the simulated web servers.

`feed_bulk` is the load balancer of a bulk run (every line to its session's server, in
order, in batches); `feed_replay` the shared scheduler of a replay (lines in event-time
order, each when the replay clock says so). A server is anything with `put(batch) ->
bool` (False: it is gone, stop feeding): a `ServerProcess`, or a fake in tests.
"""

from __future__ import annotations

import tarfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Protocol

from xxhash import xxh64_intdigest

from tripflow.ingestion.admin import IngestionError
from tripflow.ingestion.lines import (
    identify_all,
    inspect_line,
    is_click,
    rebased_line,
    server_of,
)
from tripflow.ingestion.replay import ReorderBuffer, ReplayClock
from tripflow.ingestion.server import encode_batch
from tripflow.ingestion.unsent import HEADROOM, UnsentLines
from tripflow.records.dedup import dedup_key
from tripflow.records.readers import LineCounts, LogLine, iter_log_lines

BATCH = 2000  # lines per hand-over to a server in bulk mode
# What a damaged file or archive raises while it is read.
INPUT_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error)


class Server(Protocol):
    def put(self, payload: bytes) -> bool: ...


@dataclass
class Reading:
    """How far the reader is, for progress (written by the reading thread only)."""

    read: int = 0
    skipped: int = 0  # lines of servers this run does not send for
    file: str | None = None
    first_event_ms: int | None = None
    last_event_ms: int | None = None


def open_input(paths: list[str | Path], counts: LineCounts,
                spool_dir: Path) -> Iterator[LogLine]:
    """The reader, started: a missing or unplaceable path fails here, before anything
    is sent or shown."""
    if not paths:
        raise IngestionError("no input: give day files, folders of them or a logs.tar.gz")
    # An archive's members that come before their turn wait on disk under TRIPFLOW_HOME.
    lines = iter_log_lines(paths, counts, spool_dir=spool_dir)
    try:
        first = next(lines, None)
    except (*INPUT_ERRORS, ValueError) as err:
        raise IngestionError(
            f"cannot read the input: {err}. Give day files (YYYY-MM-DD.json), folders of "
            "them, or a logs.tar.gz."
        ) from None
    return iter(()) if first is None else chain([first], lines)


def feed_bulk(lines: Iterable[LogLine], team: Sequence[Server | None],
               stop: threading.Event, reading: Reading, unsent: UnsentLines) -> None:
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
        identities = identify_all(values)
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
                         dedups: list[bytes], team: Sequence[Server | None],
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


def feed_replay(lines: Iterable[LogLine], team: Sequence[Server | None],
                 stop: threading.Event, reading: Reading, clock: ReplayClock, rebase: bool,
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
