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

from tripflow.processing.hot_marts import load_statements

_STAGE, _UPSERT, _CLEAR = load_statements("processing/sql", "quarantine_store.sql")
_STAGE_COLUMNS = ("raw_sha256", "raw", "raw_length", "reason", "detail", "topic", "partition",
                  "offset", "source_file", "source_line", "sighting")
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
    rows = (
        (hashlib.sha256(raw).digest(), raw, len(raw), reason, detail, topic, partition,
         offset, None, None, f"kafka:{topic}:{partition}:{offset}")
        for raw, reason, detail, topic, partition, offset in zip(
            raws, quarantine.column("reason").to_pylist(),
            quarantine.column("detail").to_pylist(), topics, partitions, offsets, strict=True)
    )
    return _store_rows(conn, rows)


def store_unsent(conn: psycopg.Connection, lines: Iterable[UnsentLine], run_id: str) -> int:
    """Insert lines a producer run could not send, keeping their length, a hash of all
    their bytes and their first 64 KiB. `run_id` names the run: the same file sent again
    by another run is the same record seen again. Returns how many were new."""
    rows = (
        (line.sha256, line.head, line.length, line.reason, line.detail, None, None, None,
         line.file, line.line_number, f"file:{run_id}:{line.file}:{line.line_number}")
        for line in lines
    )
    return _store_rows(conn, rows)


def _store_rows(conn: psycopg.Connection, rows: Iterable[tuple]) -> int:
    conn.execute(_STAGE)
    with conn.cursor() as cur:
        with cur.copy(
            "copy quarantine_stage ({}) from stdin".format(
                ", ".join(f'"{name}"' for name in _STAGE_COLUMNS))
        ) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(_UPSERT)
        inserted = sum(1 for (new,) in cur.fetchall() if new)
        cur.execute(_CLEAR)
    return inserted
