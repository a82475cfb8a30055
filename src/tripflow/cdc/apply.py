"""`tripflow cdc apply`: the change topic into bronze/catalog_changes and dim_documents.

A sink of the exactly-once consumer core (`tripflow.messaging.sink`, its third one). Per
batch, in this order:
1. `bronze/catalog_changes` in the lake gets the raw envelopes with their Kafka metadata,
   one Delta commit that also records each partition's last offset (a Delta app
   transaction): rows at or below it are trimmed, so a batch written again after a crash
   adds nothing;
2. one PostgreSQL transaction applies the changes to `dim_documents` and stores the
   positions (fenced: another worker's write makes this one retry from the stored ones).
   Each change is first recorded in tripflow.cdc_changes under (source LSN, key, op):
   an envelope Debezium published twice (at-least-once) conflicts there and is skipped;
3. `silver/dim_documents` in the lake is rewritten from PostgreSQL's table at most every
   `LAKE_EVERY_S` seconds while changes flow, and when the run ends (PostgreSQL's table
   is the authority; the lake copy may trail it by that much).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from tripflow import cdc, db, lake, services
from tripflow.db import sqlfiles
from tripflow.messaging.consumer import ConsumerOptions, ExactlyOnceConsumer, stop_on_signals
from tripflow.messaging.sink import Batch, SinkBase, Stored, Written
from tripflow.settings import Settings

log = logging.getLogger("tripflow.cdc")
_SQL = sqlfiles.queries("cdc", "cdc.sql")
BRONZE = "bronze/catalog_changes"
SILVER = "silver/dim_documents"
GROUP = "tripflow-cdc"
LAKE_EVERY_S = 10.0
_OPS = {"c", "u", "d", "r"}

BRONZE_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("kafka_timestamp", pa.timestamp("ms", tz="UTC")), ("key", pa.string()),
    ("value", pa.string()), ("op", pa.string()), ("document_id", pa.int64()),
    ("source_lsn", pa.int64()), ("ingested_at", pa.timestamp("us", tz="UTC")),
])
DIM_SCHEMA = pa.schema([
    ("document_id", pa.int64()), ("version", pa.int32()), ("title", pa.string()),
    ("url", pa.string()), ("doi", pa.string()), ("valid_from", pa.timestamp("us", tz="UTC")),
    ("valid_to", pa.timestamp("us", tz="UTC")), ("is_current", pa.bool_()),
    ("is_deleted", pa.bool_()), ("source_lsn", pa.int64()),
])


@dataclass
class Change:
    partition: int
    offset: int
    document_id: int
    op: str
    lsn: int
    changed_at: dt.datetime
    after: dict[str, Any] | None


@dataclass
class Version:
    """A dim_documents version: one in the table (current) or opened by this batch."""

    document_id: int
    version: int
    title: str | None
    url: str | None
    doi: str | None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    is_current: bool = True
    is_deleted: bool = False
    lsn: int = 0
    stored: bool = True  # in the table already (else inserted at the end of the batch)

    def values(self) -> tuple[str | None, str | None, str | None]:
        return self.title, self.url, self.doi

    def row(self) -> dict[str, Any]:
        return {"document_id": self.document_id, "version": self.version,
                "title": self.title, "url": self.url, "doi": self.doi,
                "valid_from": self.valid_from, "valid_to": self.valid_to,
                "is_current": self.is_current, "is_deleted": self.is_deleted,
                "lsn": self.lsn}


def _next_version(c: Change, current: dict[int, Version], last: dict[int, int],
                  closes: list[dict[str, Any]]) -> Version | None:
    """Type 2 for one change: close the document's current version (valid_to, and
    is_deleted for a delete) and open the next one. Returns the opened version; None for a
    delete, or for a change that leaves the tracked columns as they are (e.g. a snapshot
    read of the current version, or only another column changed)."""
    doc = c.document_id
    after = c.after or {}
    values = (after.get("title"), after.get("url"), after.get("doi"))
    now = current.get(doc)
    if c.op != "d" and now is not None and now.values() == values:
        return None
    if now is not None:
        now.valid_to, now.is_current, now.is_deleted = c.changed_at, False, c.op == "d"
        if now.stored:
            closes.append({"document_id": doc, "version": now.version,
                           "changed_at": c.changed_at, "deleted": c.op == "d"})
        del current[doc]
    if c.op == "d":
        return None
    last[doc] = last.get(doc, 0) + 1
    opened = Version(doc, last[doc], *values, valid_from=c.changed_at, lsn=c.lsn, stored=False)
    current[doc] = opened
    return opened


@dataclass
class ApplySummary:
    records: int = 0  # envelopes read
    applied: int = 0  # changes applied to the dimension
    repeated: int = 0  # envelopes already applied (at-least-once repeats)
    batches: int = 0
    seconds: float = 0.0
    stopped: str = ""

    def line(self) -> str:
        return (f"cdc apply: {self.records:,} envelopes, {self.applied:,} changes applied, "
                f"{self.repeated:,} repeats skipped in {self.batches} batches; stopped "
                f"({self.stopped}) after {self.seconds:.1f} s")


def parse(rows: pa.Table) -> list[Change]:
    """The batch's envelopes (Debezium JSON, schemas disabled) as changes."""
    changes = []
    for value, p, offset in zip(rows["value"].to_pylist(), rows["partition"].to_pylist(),
                                rows["offset"].to_pylist(), strict=True):
        if value is None:
            continue  # a tombstone
        envelope = orjson.loads(value)
        op = envelope.get("op")
        if op not in _OPS:
            continue
        row = envelope["after"] if op != "d" else envelope["before"]
        source = envelope["source"]
        changes.append(Change(p, offset, int(row["document_id"]), op, int(source["lsn"]),
                              dt.datetime.fromtimestamp(source["ts_ms"] / 1000, dt.UTC),
                              envelope.get("after")))
    return changes


class CdcSink(SinkBase):
    holder = "the catalogue dimension"

    def __init__(self, settings: Settings, dsn: str, topic: str) -> None:
        self.settings, self.dsn, self.topic = settings, dsn, topic
        self.conn = psycopg.connect(dsn, options="-c search_path=public")
        self.summary = ApplySummary()
        self.bronze_uri = lake.table_uri(settings, BRONZE)
        self.options = lake.storage_options(settings)
        self.lake_due = False
        self.lake_at = 0.0
        self.lock = threading.Lock()  # the connection: writer thread vs. the lake refresh

    def _app_id(self, partition: int) -> str:
        return f"tripflow-cdc:{self.topic}:{partition}"

    def stored_positions(self, partitions: list[int]) -> dict[int, Stored]:
        with self.lock:
            rows = self.conn.execute(_SQL["stored_positions"], {
                "topic": self.topic, "partitions": partitions}).fetchall()
            self.conn.commit()
        return {p: Stored(n, fp) for p, n, fp in rows}

    def prepare(self, batch: Batch) -> None:
        batch.prepared = parse(batch.rows)

    def write(self, batch: Batch) -> Written:
        self._bronze(batch)
        with self.lock, self.conn.transaction():
            stored = dict(self.conn.execute(_SQL["lock_positions"], {
                "topic": self.topic, "partitions": sorted(batch.ends)}).fetchall())
            if any(stored.get(p) != batch.expected.get(p) for p in batch.ends):
                return Written(committed=False, stored=stored)
            applied = self._apply(batch.prepared)
            for p, end in batch.ends.items():
                self.conn.execute(_SQL["save_position"], {
                    "topic": self.topic, "partition": p, "next_offset": end.next_offset,
                    "fingerprint": end.fingerprint})
        return Written(detail=applied)

    def written(self, batch: Batch, result: Written) -> None:
        if not result.committed:
            return
        s = self.summary
        s.records += batch.records
        s.batches += 1
        s.applied += result.detail
        s.repeated += len(batch.prepared) - result.detail
        self.lake_due = self.lake_due or result.detail > 0
        if self.lake_due and time.monotonic() - self.lake_at >= LAKE_EVERY_S:
            self.refresh_lake()

    # -- the lake -------------------------------------------------------------------------

    def _bronze(self, batch: Batch) -> None:
        rows = batch.rows
        table = lake.open_table(self.settings, BRONZE)
        keep = []
        done: dict[int, int] = {}
        for p in batch.ends:
            last = table.transaction_version(self._app_id(p)) if table is not None else None
            done[p] = -1 if last is None or p in batch.replaced else last
        by_offset = {(c.partition, c.offset): c for c in batch.prepared}
        now = dt.datetime.now(dt.UTC)
        for value, p, offset, ts, key in zip(
                rows["value"].to_pylist(), rows["partition"].to_pylist(),
                rows["offset"].to_pylist(), rows["timestamp"].to_pylist(),
                rows["key"].to_pylist(), strict=True):
            if offset <= done[p]:
                continue
            change = by_offset.get((p, offset))
            keep.append({
                "topic": self.topic, "partition": p, "offset": offset,
                "kafka_timestamp": dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
                if ts >= 0 else None,
                "key": key.decode() if key is not None else None,
                "value": value.decode() if value is not None else None,
                "op": change.op if change else None,
                "document_id": change.document_id if change else None,
                "source_lsn": change.lsn if change else None, "ingested_at": now})
        if not keep:
            return
        last = {}
        for row in keep:
            last[row["partition"]] = max(last.get(row["partition"], -1), row["offset"])
        write_deltalake(self.bronze_uri, pa.Table.from_pylist(keep, BRONZE_SCHEMA),
                        mode="append", configuration=lake.TABLE_CONFIGURATION,
                        storage_options=self.options,
                        commit_properties=CommitProperties(app_transactions=[
                            Transaction(self._app_id(p), v) for p, v in sorted(last.items())]))

    def refresh_lake(self) -> None:
        """Rewrite silver/dim_documents from PostgreSQL's dim_documents."""
        with self.lock:
            rows = self.conn.execute(_SQL["dim_rows"]).fetchall()
            self.conn.commit()
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in DIM_SCHEMA]
        table = pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in
                                      zip(columns, DIM_SCHEMA, strict=True)], schema=DIM_SCHEMA)
        write_deltalake(lake.table_uri(self.settings, SILVER), table, mode="overwrite",
                        schema_mode="overwrite", configuration=lake.TABLE_CONFIGURATION,
                        storage_options=self.options)
        self.lake_due, self.lake_at = False, time.monotonic()

    # -- the dimension ----------------------------------------------------------------------

    def _apply(self, changes: list[Change]) -> int:
        """Apply the batch's new changes in log order (a few statements per batch, not per
        change); returns how many were new."""
        fresh = self._record(changes)
        if not fresh:
            return 0
        docs = sorted({c.document_id for c in fresh})
        current = {row[0]: Version(*row) for row in self.conn.execute(
            _SQL["current_versions"], {"ids": docs}).fetchall()}
        last = dict(self.conn.execute(_SQL["last_versions"], {"ids": docs}).fetchall())
        closes: list[dict[str, Any]] = []
        opened: list[Version] = []
        for c in fresh:
            version = _next_version(c, current, last, closes)
            if version is not None:
                opened.append(version)
        with self.conn.cursor() as cur:
            if closes:
                cur.executemany(_SQL["close_version"], closes)
            if opened:
                cur.executemany(_SQL["open_version"], [v.row() for v in opened])
        self.conn.execute(_SQL["refresh_changes_mart"], {
            "dates": sorted({c.changed_at.date() for c in fresh})})
        self.conn.execute(_SQL["retitle_top_docs"], {"ids": docs})
        return len(fresh)

    def _record(self, changes: list[Change]) -> list[Change]:
        """Record the changes in tripflow.cdc_changes; the ones not there before, in order
        (at-least-once delivery repeats envelopes, within a batch too)."""
        unique: dict[tuple[int, int, str], Change] = {}
        for c in changes:
            unique.setdefault((c.lsn, c.document_id, c.op), c)
        if not unique:
            return []
        rows = list(unique.values())
        new = {(lsn, doc, op) for lsn, doc, op in self.conn.execute(_SQL["record_changes"], {
            "lsns": [c.lsn for c in rows], "ids": [c.document_id for c in rows],
            "ops": [c.op for c in rows], "at": [c.changed_at for c in rows],
            "partitions": [c.partition for c in rows],
            "offsets": [c.offset for c in rows]}).fetchall()}
        return [c for key, c in unique.items() if key in new]

    def close(self) -> None:
        self.conn.close()


def apply(settings: Settings, *, until_idle: float | None = None,
          stop: threading.Event | None = None, metrics: Any = None) -> ApplySummary:
    """Consume the change topic into the dimension until stopped (or idle).

    `metrics`: a `tripflow.observability.metrics.WorkerMetrics` to feed."""
    settings = services.resolve(settings)
    dsn = db.prepare(settings)
    topic = cdc.topic(settings)
    sink = CdcSink(settings, dsn, topic)
    options = ConsumerOptions(
        group_id=GROUP, partitions=(), until_idle=until_idle, batch_max_records=5_000,
        batch_max_s=0.05, close_when_quiet=True, commit_hint=True,
        config={"session.timeout.ms": 6000}, writer_name="tripflow-cdc-writer")
    stop = stop or threading.Event()
    consumer = ExactlyOnceConsumer(settings.model_copy(update={"topic": topic}), options,
                                   sink, stop=stop, metrics=metrics)
    try:
        with stop_on_signals(stop):
            stats = consumer.run()
        if sink.lake_due or not lake.exists(settings, SILVER):
            sink.refresh_lake()
    finally:
        sink.close()
    sink.summary.seconds, sink.summary.stopped = stats.seconds, stats.stopped
    return sink.summary
