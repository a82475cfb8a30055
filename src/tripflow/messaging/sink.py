"""What a sink of the exactly-once consumer loop (`tripflow.messaging.consumer`) provides.

The loop reads Kafka; a sink stores what it read *together with* where each partition's
reading ends, in one atomic step, and says where it stands when asked. That is all the
exactly-once guarantee needs: on every assignment (and after a fenced write or a broker
outage) the loop seeks each partition to the sink's stored position, never to Kafka's
committed offset, so a kill at any instant followed by a restart reads again exactly what
the sink does not hold.

A sink has:
- `holder`: a few words naming it in messages ("bronze", "the hot store");
- `stored_positions(partitions)` (main thread): per partition, the next offset to read
  (None: nothing stored, read from the log's start) and the fingerprint of the record just
  before it (`fingerprint(...)`, None when unknown). The loop reads that record back and
  compares: when it differs, or the log now ends before it, the broker's log was replaced
  (an embedded broker forgets everything on restart) and the partition is read from the
  start of the new log (`Batch.replaced` says so to the sink);
- `write(batch)` (the writer thread): store `batch.rows` and `batch.ends` atomically;
  return `Written(committed=False, stored=...)` when the stored positions are not
  `batch.expected` any more (another worker wrote them: fenced; the loop re-reads the
  positions and the partitions), or trim what it already holds;
- optional hooks (`SinkBase` has do-nothing defaults): `prepare(batch)` on the main thread
  before the write (parse, while the previous batch is written), `written(batch, result)`
  on the main thread after it (counts, callbacks), `log_replaced(partition, why)`.
A sink may raise `Stopped` (e.g. while waiting for its database) to end the loop.

The shape of a third sink (change-data capture: Debezium envelopes into a PostgreSQL
table, offsets in the same transaction), about a page:

    class CdcSink(SinkBase):
        holder = "the catalogue"

        def __init__(self, dsn: str, topic: str) -> None:
            self.conn, self.topic = psycopg.connect(dsn), topic

        def stored_positions(self, partitions):
            rows = self.conn.execute(
                "select partition, next_offset, fingerprint from tripflow.cdc_offsets "
                "where topic = %s and partition = any(%s)", (self.topic, partitions))
            positions = {p: Stored(n, fp) for p, n, fp in rows}
            self.conn.commit()
            return positions

        def write(self, batch):
            with self.conn.transaction():
                stored = dict(self.conn.execute(
                    "select partition, next_offset from tripflow.cdc_offsets where topic = %s "
                    "and partition = any(%s) for update", (self.topic, sorted(batch.ends))))
                if any(stored.get(p) != batch.expected.get(p) for p in batch.ends):
                    return Written(committed=False, stored=stored)
                apply_envelopes(self.conn, batch.rows["value"])  # upserts, type-2 rows
                save_offsets(self.conn, self.topic, batch.ends)  # next_offset, fingerprint
            return Written()

and it runs with `ExactlyOnceConsumer(settings, ConsumerOptions(group_id="tripflow-cdc"),
CdcSink(dsn, topic)).run()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import xxhash

# Records as the loop hands them to sinks: Arrow rows, not librdkafka messages (a message
# keeps its whole fetch response in memory) nor Python objects.
RECORD_SCHEMA = pa.schema([
    ("value", pa.binary()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.int64()),  # Kafka timestamp, epoch ms (< 0: none)
    ("key", pa.binary()),
])


def fingerprint(ts: int, key: bytes | None, value: bytes | None) -> str:
    """Identity of a record: its Kafka timestamp and a hash of key and value."""
    digest = xxhash.xxh64(key or b"")
    digest.update(b"\x00")
    digest.update(value or b"")
    return f"{ts}:{digest.hexdigest()}"


class Stopped(Exception):
    """Raised by a sink (or the loop) to end the run at once: asked to stop."""


@dataclass(frozen=True)
class Stored:
    """A partition's stored position: the next offset to read (None: nothing stored) and
    the fingerprint of the record before it (None: not known, not verified)."""

    next_offset: int | None
    fingerprint: str | None = None


@dataclass(frozen=True)
class PartitionEnd:
    """Where a batch leaves one partition: next offset and the last record's identity."""

    next_offset: int
    fingerprint: str


@dataclass
class Batch:
    """Records of one micro-batch and where they leave each partition."""

    rows: pa.Table  # RECORD_SCHEMA; each partition's records in offset order
    ends: dict[int, PartitionEnd]
    # per partition: the stored next offset the loop read or wrote last (the fence)
    expected: dict[int, int | None]
    # partitions read from the start of a log that replaced the stored position's
    replaced: frozenset[int] = frozenset()
    generation: int = 0  # the loop's; batches of an older generation are dropped
    records: int = -1  # Kafka records (rows may be released once prepared)
    prepared: Any = None  # what the sink's prepare() made of the rows
    prepare_ms: float = 0.0
    created: float = field(default_factory=time.monotonic)  # records collected (metrics)

    def __post_init__(self) -> None:
        if self.records < 0:
            self.records = self.rows.num_rows

    def release_rows(self) -> None:
        """Drop the rows (a sink that prepared what it needs from them)."""
        self.rows = self.rows.slice(0, 0)


@dataclass
class Written:
    """Outcome of Sink.write."""

    committed: bool = True
    stored: dict[int, int | None] = field(default_factory=dict)  # when not committed
    detail: Any = None  # the sink's own report, for its written() hook


class Sink(Protocol):
    holder: str

    def stored_positions(self, partitions: list[int]) -> dict[int, Stored]: ...

    def prepare(self, batch: Batch) -> None: ...

    def write(self, batch: Batch) -> Written: ...

    def written(self, batch: Batch, result: Written) -> None: ...

    def log_replaced(self, partition: int, why: str) -> None: ...


class SinkBase:
    """Defaults for a sink's optional hooks."""

    holder = "the sink"

    def prepare(self, batch: Batch) -> None:
        return None

    def written(self, batch: Batch, result: Written) -> None:
        return None

    def log_replaced(self, partition: int, why: str) -> None:
        return None
