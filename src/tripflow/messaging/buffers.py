"""Where the consumer loop keeps fetched records until a batch closes.

`Buffers` is what the loop asks of them; `FifoBuffers` keeps records in arrival order and
releases them all (bronze). `tripflow.processing.alignment.AlignedBuffers` keeps them per
partition and releases them in event-time order (the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc


class Buffers(Protocol):
    capacity: int  # records per partition before it is paused at the broker

    def add(self, rows: pa.Table) -> None:
        """Append fetched records (RECORD_SCHEMA rows)."""

    def size(self, partition: int | None = None) -> int: ...

    def full(self, partition: int) -> bool: ...

    def drop(self, partition: int) -> None:
        """Forget a partition's records (revoked, or about to be re-read)."""

    def release(self, limit: int, *, partitions: list[int],
                may_have_more: Callable[[int], bool], now: float) -> list[pa.Table]:
        """Take up to about `limit` records for the next batch."""

    def written(self, ends: dict[int, int]) -> None:
        """A batch was written: partition -> the next offset now stored."""


class FifoBuffers:
    """Records in arrival order, all released at once; never full."""

    capacity = 2**62

    def __init__(self) -> None:
        self.chunks: list[pa.Table] = []
        self._size = 0

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self.chunks.append(rows)
            self._size += rows.num_rows

    def size(self, partition: int | None = None) -> int:
        if partition is None:
            return self._size
        return sum(pc.sum(pc.equal(c["partition"], partition)).as_py() or 0
                   for c in self.chunks)

    def full(self, partition: int) -> bool:
        return False

    def drop(self, partition: int) -> None:
        kept = [c.filter(pc.not_equal(c["partition"], partition)) for c in self.chunks]
        self.chunks = [c for c in kept if c.num_rows]
        self._size = sum(c.num_rows for c in self.chunks)

    def release(self, limit: int, *, partitions: list[int],
                may_have_more: Callable[[int], bool], now: float) -> list[pa.Table]:
        out, self.chunks, self._size = self.chunks, [], 0
        return out

    def written(self, ends: dict[int, int]) -> None:
        pass
