"""The reader's side of a simulated web server: starts `python -m tripflow.ingestion.server`
and speaks server.py's protocol to it (frames on its stdin, JSON reports on its stdout,
SIGUSR1/SIGUSR2 for stop/abort).

A plain child interpreter rather than a `multiprocessing` process: "spawn" and
"forkserver" import the caller's main module again in every child (the `tripflow`
script's whole CLI, Airflow's, a benchmark's: measured 15-30 % slower and twice the
memory per server), and "fork" is unsafe with librdkafka (a server forked while another
thread of the caller had Kafka clients crashed).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

import tripflow
from tripflow.ingestion.admin import IngestionError
from tripflow.ingestion.server import ServerReport, ServerSpec, write_frame

PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask for, by default


class ServerProcess:
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
