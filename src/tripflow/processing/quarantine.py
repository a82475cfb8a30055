"""Storing quarantined records in PostgreSQL: one row per distinct raw bytes, with how
often it was seen (spec "Bad input").

Both paths call `store` with the parser's quarantine rows and their Kafka positions; the
producer calls it for lines it could not send (`too_large`) with their file and line.
A sighting counts once by where it was seen, so the hot path and silver meeting the same
Kafka record, or a retried batch, change nothing; a resend of the same bytes at another
position (or in another produce run) raises `seen_count` of the one row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
import pyarrow as pa

from tripflow.db import sqlfiles
from tripflow.db.copy import copy_arrow

_STAGE, _UPSERT, _CLEAR = sqlfiles.statements("processing/sql", "quarantine_store.sql")
# quarantine_stage's columns: Arrow type, PostgreSQL type.
_STAGE_SCHEMA = {"raw_sha256": pa.binary(), "raw": pa.binary(), "raw_length": pa.int64(),
                 "reason": pa.string(), "detail": pa.string(), "topic": pa.string(),
                 "partition": pa.int32(), "offset": pa.int64(), "source_file": pa.string(),
                 "source_line": pa.int64(), "sighting": pa.string()}
_STAGE_TYPES = ("bytea", "bytea", "bigint", "text", "text", "text", "integer", "bigint",
                "text", "bigint", "text")
KEPT_BYTES = 64 * 1024  # of a line too large to send: its first 64 KiB are kept


@dataclass(frozen=True)
class UnsentLine:
    """A line the producer could not send: where it was, its length, a hash of all its
    bytes and the first KEPT_BYTES of them (a line may be far larger than memory wants)."""

    file: str
    line_number: int  # 1-based, counting every line of the file
    length: int
    sha256: bytes
    head: bytes
    reason: str
    detail: str

    @classmethod
    def of(cls, file: str, line_number: int, raw: bytes, reason: str,
           detail: str) -> UnsentLine:
        return cls(file, line_number, len(raw), hashlib.sha256(raw).digest(),
                   raw[:KEPT_BYTES], reason, detail)


def store(conn: psycopg.Connection, quarantine: pa.Table) -> int:
    """Insert the parser's quarantine rows (with topic/partition/offset context columns).

    Runs inside the caller's transaction. Returns how many distinct records were new.
    """
    if quarantine.num_rows == 0:
        return 0
    raws = quarantine.column("raw").to_pylist()
    topics = quarantine.column("topic").to_pylist()
    partitions = quarantine.column("partition").to_pylist()
    offsets = quarantine.column("offset").to_pylist()
    nothing = pa.nulls(quarantine.num_rows)
    return _store_rows(conn, {
        "raw_sha256": [hashlib.sha256(raw).digest() for raw in raws],
        "raw": raws,
        "raw_length": [len(raw) for raw in raws],
        "reason": quarantine.column("reason"),
        "detail": quarantine.column("detail"),
        "topic": topics,
        "partition": partitions,
        "offset": offsets,
        "source_file": nothing,
        "source_line": nothing,
        "sighting": [f"kafka:{topic}:{partition}:{offset}" for topic, partition, offset
                     in zip(topics, partitions, offsets, strict=True)],
    })


def store_unsent(conn: psycopg.Connection, lines: Iterable[UnsentLine], run_id: str) -> int:
    """Insert lines a producer run could not send, keeping their length, a hash of all
    their bytes and their first 64 KiB. `run_id` names the run: the same file sent again
    by another run is the same record seen again. Returns how many were new."""
    lines = list(lines)
    if not lines:
        return 0
    nothing = [None] * len(lines)
    return _store_rows(conn, {
        "raw_sha256": [line.sha256 for line in lines],
        "raw": [line.head for line in lines],
        "raw_length": [line.length for line in lines],
        "reason": [line.reason for line in lines],
        "detail": [line.detail for line in lines],
        "topic": nothing,
        "partition": nothing,
        "offset": nothing,
        "source_file": [line.file for line in lines],
        "source_line": [line.line_number for line in lines],
        "sighting": [f"file:{run_id}:{line.file}:{line.line_number}" for line in lines],
    })


def _store_rows(conn: psycopg.Connection, columns: dict[str, object]) -> int:
    conn.execute(_STAGE)
    stage = pa.table({name: values.cast(_STAGE_SCHEMA[name])
                      if isinstance(values, pa.Array | pa.ChunkedArray)
                      else pa.array(values, _STAGE_SCHEMA[name])
                      for name, values in columns.items()})
    copy_arrow(conn, "quarantine_stage", stage, list(_STAGE_TYPES))
    with conn.cursor() as cur:
        cur.execute(_UPSERT)
        inserted = sum(1 for (new,) in cur.fetchall() if new)
        cur.execute(_CLEAR)
    return inserted
