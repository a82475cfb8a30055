"""Running real `tripflow stream` processes in tests: start, SIGKILL, SIGTERM, wait."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import psycopg


def tripflow_command() -> list[str]:
    return [sys.executable, "-m", "tripflow"]


class Worker:
    """One `tripflow stream` process, its output appended to `log`."""

    started: ClassVar[list[Worker]] = []  # every worker started, for `kill_leftovers`

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([*tripflow_command(), "stream", *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        Worker.started.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: finish the batch in flight, leave the group, print the summary."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def stored_records(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("select records from tripflow.hot_state").fetchone()[0]
    except psycopg.OperationalError:
        return -1


def wait_for_records(dsn: str, count: int, timeout: float, workers: list[Worker]) -> None:
    """Until the hot state has counted `count` Kafka records (exactly once: not more)."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = stored_records(dsn)
        if seen >= count:
            assert seen == count
            return
        assert all(w.alive() for w in workers), [w.text()[-3000:] for w in workers]
        time.sleep(0.5)
    raise AssertionError(f"only {seen} of {count} records after {timeout} s:\n"
                         + "\n".join(w.text()[-3000:] for w in workers))


def kill_leftovers() -> None:
    """SIGKILL the workers a (failed) test left running."""
    for worker in Worker.started:
        if worker.alive():
            worker.kill()
    Worker.started.clear()
