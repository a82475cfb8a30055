"""One simulated web server: a process with its own Kafka producer.

Servers are processes, not threads, so that sending (a few µs of Python per record)
runs beside the reader instead of sharing its interpreter lock: that is what takes a
run well past 10⁵ records/s. Each is started as `python -m tripflow.ingestion.server`
(a plain child process: nothing of the caller's state, threads or main module is
copied or re-imported, which matters when Airflow or a notebook calls `produce`).

Protocol, all over the child's own pipes:
- stdin: frames of an 8-byte little-endian length and a payload. The first frame is the
  ServerSpec (pickled); then batches of lines (`encode_batch`); an empty frame (or end
  of file) ends the input.
- stdout: JSON lines: one as soon as the producer exists ("ready"), then counters
  {"sent", "delivered", "failed", "bytes"} a few times a second, and one last line with
  "final": true, the delivery errors, and a traceback in "crash" if something broke.
- signals: SIGUSR1 = stop (stop taking lines, flush what is in flight for at most
  `flush_on_stop_s`, report); SIGUSR2 = abort (stop waiting for the flush). The server
  ignores SIGINT/SIGTERM: the reader decides when to stop, so no record is lost in a
  server that died early.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import accumulate, pairwise
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException, Producer

_FRAME = struct.Struct("<Q")
REPORT_EVERY_S = 0.1

# A batch on the wire: three columns of the same length (values, keys, dedup keys; b""
# for an absent key, which is never empty otherwise), each sent as its items' lengths
# (uint32) and their bytes back to back. Three big bytes objects cost next to nothing
# to pass through a pipe; pickling thousands of small ones costs more than producing.
Column = list[bytes]
_COUNT = struct.Struct("<I")


def encode_batch(values: Column, keys: Column, dedup_keys: Column) -> bytes:
    """One frame's payload for `values` with their keys and dedup keys (b"": none)."""
    columns = (values, keys, dedup_keys)
    return b"".join([
        _COUNT.pack(len(values)),
        *(array("I", map(len, column)).tobytes() for column in columns),
        *(b"".join(column) for column in columns),
    ])


def decode_batch(payload: bytes) -> tuple[Column, Column, Column]:
    (count,) = _COUNT.unpack_from(payload)
    at = _COUNT.size
    lengths = []
    for _ in range(3):
        column_lengths = array("I")
        column_lengths.frombytes(payload[at:at + 4 * count])
        lengths.append(column_lengths)
        at += 4 * count
    columns = []
    for column_lengths in lengths:
        ends = list(accumulate(column_lengths, initial=at))
        columns.append([payload[start:end] for start, end in pairwise(ends)])
        at = ends[-1]
    return columns[0], columns[1], columns[2]


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(fd: int) -> bytes | None:
    """The next frame's payload from a file descriptor (unbuffered, so that select()
    on it tells the truth); None at the end: an empty frame or end of file."""
    header = _read_exactly(fd, _FRAME.size)
    if header is None:
        return None
    (size,) = _FRAME.unpack(header)
    return _read_exactly(fd, size) if size else None


def _read_exactly(fd: int, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        chunk = os.readv(fd, [view[done:]])
        if chunk == 0:
            return None  # the reader went away mid-frame: treat as the end
        done += chunk
    return bytes(buffer)


@dataclass(frozen=True)
class ServerSpec:
    index: int
    topic: str
    config: dict[str, Any]  # producer settings (plain values: it crosses a process boundary)
    flush_on_stop_s: float = 30.0


@dataclass
class ServerReport:
    """A server's counters and, at the end, how it ended."""

    sent: int = 0  # handed to librdkafka
    delivered: int = 0  # delivery report without error (acks=all)
    failed: int = 0  # delivery report with an error: failed for good
    bytes: int = 0  # value bytes sent
    final: bool = False
    errors: dict[str, int] = field(default_factory=dict)  # delivery error -> records
    fatal: str | None = None  # the producer hit a fatal error (e.g. idempotence lost)
    crash: str | None = None  # a traceback: a bug, not a delivery problem


class _Flags:
    """Set from signal handlers: plain attributes, no locks."""

    def __init__(self) -> None:
        self.stop = False
        self.abort = False

    def on_stop(self, _signum: int, _frame: object) -> None:
        self.stop = True

    def on_abort(self, _signum: int, _frame: object) -> None:
        self.stop = self.abort = True


class _Server:
    def __init__(self, spec: ServerSpec, flags: _Flags, out: IO[bytes]) -> None:
        self.spec = spec
        self.flags = flags
        self.out = out
        self.report = ServerReport()
        self.errors: Counter[str] = Counter()
        self.producer = Producer({**spec.config, "on_delivery": self._on_delivery,
                                  "error_cb": self._on_error})
        server = str(spec.index).encode()
        self.plain_headers = [("server", server)]  # shared: headers are copied, not kept
        self.server_header = ("server", server)
        self.last_report = 0.0

    # Delivery reports run in this thread, inside poll()/flush(): one writer.
    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.report.delivered += 1
        else:
            self.report.failed += 1
            self.errors[err.str()] += 1

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():  # this producer cannot send anything any more
            self.report.fatal = err.str()
            self.flags.stop = True

    def publish(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_report >= REPORT_EVERY_S:
            self.last_report = now
            self.report.errors = dict(self.errors)
            self.out.write(json.dumps(asdict(self.report)).encode() + b"\n")
            self.out.flush()

    def serve(self, fd: int) -> None:
        """Produce the frames read from `fd` until the end of input or a stop. Reading
        happens only when a batch is done, so a busy server holds the reader back."""
        poll = self.producer.poll
        while not self.flags.stop:
            readable, _, _ = select.select([fd], [], [], 0.1)
            if not readable:
                poll(0)
                self.publish()
                continue
            payload = read_frame(fd)
            if payload is None:  # end of input
                return
            self._send(payload)
            poll(0)  # serve delivery reports
            self.publish()

    def _send(self, payload: bytes) -> None:
        produce, topic, producer = self.producer.produce, self.spec.topic, self.producer
        plain, server_header, flags = self.plain_headers, self.server_header, self.flags
        values, keys, dedups = decode_batch(payload)
        sent = 0
        try:
            for value, key, dedup in zip(values, keys, dedups, strict=True):
                headers = [server_header, ("dedup_key", dedup)] if dedup else plain
                while True:
                    try:
                        produce(topic, value, key or None, headers=headers)
                        break
                    except BufferError:  # local queue full: let delivery reports drain it
                        producer.poll(0.05)
                        if flags.stop:
                            return
                    except KafkaException as err:  # refused at once (e.g. too large):
                        self.report.failed += 1    # counted like a failed delivery
                        self.errors[err.args[0].str()] += 1
                        break
                sent += 1
        finally:
            self.report.sent += sent
            self.report.bytes += sum(map(len, values[:sent]))

    def flush(self) -> None:
        """Wait for every delivery report; after a stop at most flush_on_stop_s, and
        not at all after an abort or a fatal error."""
        deadline = time.monotonic() + self.spec.flush_on_stop_s
        while len(self.producer) > 0 and not self.flags.abort and self.report.fatal is None:
            if self.flags.stop and time.monotonic() > deadline:
                break
            self.producer.flush(0.1)
            self.publish()
        self.producer.poll(0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    flags = _Flags()
    signal.signal(signal.SIGUSR1, flags.on_stop)
    signal.signal(signal.SIGUSR2, flags.on_abort)
    stdin, out = sys.stdin.fileno(), sys.stdout.buffer
    server: _Server | None = None
    crash: str | None = None
    try:
        payload = read_frame(stdin)
        if payload is None:
            return  # the reader gave up before sending anything
        server = _Server(ServerSpec(**pickle.loads(payload)), flags, out)
        server.publish(force=True)  # the first report says "ready"
        server.serve(stdin)
    except BaseException:
        crash = traceback.format_exc()
    finally:
        report = ServerReport(crash=crash)
        if server is not None:
            try:
                server.flush()
            except BaseException:
                report.crash = crash or traceback.format_exc()
            server.report.crash = report.crash
            report = server.report
            report.errors = dict(server.errors)
        report.final = True
        out.write(json.dumps(asdict(report)).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
