"""Detached tripflow processes the demo leaves running (the stream worker, a live replay).

Each has a state file under $TRIPFLOW_HOME/run with its PID, so `tripflow services down`
stops exactly the processes tripflow started and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tripflow.services.procs import pid_alive, read_json, write_json


def _state_file(home: Path, name: str) -> Path:
    return home / "run" / f"{name}.json"


def running(home: Path, name: str) -> bool:
    state = read_json(_state_file(home, name))
    return bool(state) and pid_alive(state.get("pid"), "tripflow")


def start(home: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> bool:
    """Start `tripflow ARGS...` detached unless `name` runs already. True when started now."""
    if running(home, name):
        return False
    log = home / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _state_file(home, name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tripflow", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), "TRIPFLOW_HOME": str(home)},
            start_new_session=True,  # outlives the command that started it
        )
    write_json(_state_file(home, name), {"pid": proc.pid, "args": args, "log": str(log)})
    return True


def stop(home: Path, name: str, timeout_s: float = 20.0) -> bool:
    """SIGTERM (the worker flushes and commits), then SIGKILL after `timeout_s`."""
    state = read_json(_state_file(home, name))
    pid = state.get("pid") if state else None
    if not pid_alive(pid, "tripflow"):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid, "tripflow"):
        time.sleep(0.2)
    if pid_alive(pid, "tripflow"):
        os.kill(pid, signal.SIGKILL)
    _state_file(home, name).unlink(missing_ok=True)
    return True


def names(home: Path) -> list[str]:
    folder = home / "run"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


# Change data capture of the catalogue (tripflow.cdc): capture, apply and, in the demo,
# an editor making changes, so the dimension and mart_catalog_changes move while you watch.
CDC_WORKERS = {
    "cdc-capture": ["cdc", "capture"],
    "cdc-apply": ["cdc", "apply"],
}
CATALOG_EDITOR = ("catalog-editor", ["catalog", "simulate", "--rate", "0.5",
                                     "--duration", "86400"])


def start_cdc(home: Path, *, editor: bool = False) -> dict[str, bool]:
    """Start capture and apply (and the demo's editor) unless running; name -> started."""
    wanted = dict(CDC_WORKERS)
    if editor:
        wanted[CATALOG_EDITOR[0]] = CATALOG_EDITOR[1]
    return {name: start(home, name, args) for name, args in wanted.items()}
