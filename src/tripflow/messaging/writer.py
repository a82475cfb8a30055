"""The consumer loop's writer thread: sink writes, in order, a bounded number at a time.

Writing runs on one thread while the main thread fetches and prepares the next batch (the
sink's database or object store then works on another core). After a write fails, later
batches are not written (they would move the stored positions past the failed one's
records); the failure is raised on the main thread when that batch is accounted for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tripflow.messaging.sink import Batch, Sink, Written


class _Skipped(Exception):
    """A batch after a failed one: not written."""


class Writer:
    def __init__(self, sink: Sink, max_inflight: int, name: str) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.sink = sink
        self.max_inflight = max_inflight
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.inflight: deque[tuple[Batch, Future[Written]]] = deque()
        self.failed = False

    def submit(self, batch: Batch) -> None:
        assert len(self.inflight) < self.max_inflight, "account for a write first"
        self.inflight.append((batch, self.executor.submit(self._write, batch)))

    def _write(self, batch: Batch) -> Written:
        if self.failed:
            raise _Skipped
        try:
            return self.sink.write(batch)
        except BaseException:
            self.failed = True
            raise

    def idle(self) -> bool:
        return not self.inflight

    def finished(self, *, drain: bool = False, room: bool = False
                 ) -> Iterator[tuple[Batch, Written]]:
        """Finished writes, oldest first: every one (`drain`, waiting), enough to leave
        room for one more (`room`, waiting), and any others already done. A failed write
        raises its error here."""
        while self.inflight:
            batch, future = self.inflight[0]
            wait = drain or (room and len(self.inflight) >= self.max_inflight)
            if not wait and not future.done():
                return
            self.inflight.popleft()
            yield batch, future.result()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.inflight.clear()
