"""A replay split into separate runs, one per simulated web server, as the original
system's web servers each sent their own share (the `tripflow_replay` Airflow DAG: a
`plan` task, then one mapped task per server).

`plan_replay` fixes the one schedule every run follows, a ReplayAnchor: the first event
time of the input and the wall-clock moment it is due, a little ahead so that every
run has started its producer by then. `replay_server` runs one server's share on that
schedule. Runs started seconds apart, in separate processes, then send together in
event-time order at the requested speed, and every line exactly once (each run reads
the whole input and sends the lines hashed to its server; see producer.py).

Plans are plain JSON values: they travel between Airflow tasks as XComs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tripflow.ingestion.admin import DEFAULT_CONNECT_TIMEOUT_S, IngestionError
from tripflow.ingestion.feed import INPUT_ERRORS
from tripflow.ingestion.lines import inspect_line, is_click
from tripflow.ingestion.producer import (
    Mode,
    ProduceProgress,
    ProduceSummary,
    produce,
)
from tripflow.ingestion.replay import ReplayAnchor
from tripflow.records.readers import iter_day_files
from tripflow.settings import Settings

DEFAULT_LEAD_S = 10.0


def first_event_ms(paths: Sequence[str | Path], *, now_ms: int | None = None) -> int:
    """The earliest event time among the clicks of the first day file (in date order)
    that has any: where a replay of `paths` starts, found without reading the dataset.

    Clicks are the lines a replay schedules by their own time (`is_click` at `now_ms`).
    Later files are not read: they hold later days (and a few late clicks), so this is
    where the replay starts; a click from before it, if any, is simply sent at the start.
    """
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    earliest: int | None = None
    current: str | None = None
    lines = iter_day_files(paths)
    try:
        for file, line in lines:
            if file != current:
                if earliest is not None:
                    break  # the first file with a click is done: enough
                current = file
            info = inspect_line(line)
            if is_click(info, now_ms):
                event_ms = info[2]
                assert event_ms is not None  # is_click checked it
                earliest = event_ms if earliest is None else min(earliest, event_ms)
    except (*INPUT_ERRORS, ValueError) as err:
        raise IngestionError(
            f"cannot read the input: {err}. Give day files (YYYY-MM-DD.json), folders of "
            "them, or a logs.tar.gz."
        ) from None
    finally:
        lines.close()  # type: ignore[attr-defined]  # a generator: closes the open file
    if earliest is None:
        raise IngestionError("the input holds no click with a usable time: nothing to replay")
    return earliest


def plan_replay(
    paths: Sequence[str | Path] | str | Path,
    speed: float,
    servers: int,
    *,
    lead_s: float = DEFAULT_LEAD_S,
    rebase: bool = True,
) -> list[dict[str, Any]]:
    """One plan per simulated web server for a replay of `paths` at `speed`, all on one
    schedule; hand each to `replay_server` (in any process, in any order).

    The first record is due `lead_s` seconds from now, plus however long finding it
    took here (listing an archive, reading the first day file): every run reads as much
    before its first send (an archive is listed first; the reorder buffer fills up with
    a day of the log). A run that starts later still sends everything, catching up at
    once on what is already due. With `rebase`, DateCreated of clicks is moved so the
    first record is dated when it is due (the replay looks live).

    Each plan: {"paths": [...], "speed": float, "servers": N, "server": k,
    "anchor": {"first_event_ms", "start_wall_ms", "rebase_ms"}} (paths made absolute,
    so a task started elsewhere reads the same files).
    """
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    if not given:
        raise IngestionError("no input: give day files, folders of them or a logs.tar.gz")
    if not speed > 0:
        raise IngestionError("--speed must be a positive number")
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 1:
        raise IngestionError("--servers must be at least 1")
    if not lead_s >= 0:
        raise IngestionError("lead_s cannot be negative")
    resolved = [str(Path(path).resolve()) for path in given]
    began = time.monotonic()
    lead_ms = round(lead_s * 1000)
    # Plausible event times as the runs will judge them: up to a day after the start.
    first = first_event_ms(resolved, now_ms=time.time_ns() // 1_000_000 + lead_ms)
    finding_ms = round((time.monotonic() - began) * 1000)
    start_wall_ms = time.time_ns() // 1_000_000 + lead_ms + finding_ms
    anchor = ReplayAnchor(first, start_wall_ms, start_wall_ms if rebase else None)
    return [
        {"paths": resolved, "speed": float(speed), "servers": servers, "server": index,
         "anchor": anchor.to_dict()}
        for index in range(servers)
    ]


def replay_server(
    plan: dict[str, Any],
    settings: Settings,
    *,
    progress: Callable[[ProduceProgress], None] | None = None,
    stop: threading.Event | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> ProduceSummary:
    """Replay one server's share of a plan from `plan_replay` to settings.topic.

    Rebasing follows the plan's anchor (so all servers agree). The summary's `ok` says
    whether this share arrived in full; `sent_per_server` has 0 for the other servers.
    Raises IngestionError for a malformed plan (and whatever `produce` raises).
    """
    try:
        paths = [str(path) for path in plan["paths"]]
        speed = float(plan["speed"])
        servers = int(plan["servers"])
        server = int(plan["server"])
        anchor = ReplayAnchor.from_dict(plan["anchor"])
    except (KeyError, TypeError, ValueError) as err:
        raise IngestionError(f"not a replay plan from plan_replay ({err!r}): {plan!r}") from None
    return produce(
        paths, settings, mode=Mode.REPLAY, speed=speed, servers=servers,
        only_servers=[server], anchor=anchor, progress=progress, stop=stop,
        connect_timeout_s=connect_timeout_s,
    )
