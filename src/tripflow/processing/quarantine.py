"""Storing quarantined Kafka records in PostgreSQL, idempotently by (topic, partition,
offset, raw bytes).

Both paths call `store`: a record quarantined by the hot path and again by silver is one row;
a different record at a reused position (the embedded broker's log after a restart) is
another.
"""

from __future__ import annotations

import psycopg
import pyarrow as pa

COLUMNS = ("topic", "partition", "offset", "reason", "detail", "raw")


def store(conn: psycopg.Connection, quarantine: pa.Table) -> int:
    """Insert the parser's quarantine rows (with topic/partition/offset context columns).

    Runs inside the caller's transaction. Returns how many rows were new.
    """
    if quarantine.num_rows == 0:
        return 0
    conn.execute(
        'create temp table if not exists quarantine_stage (topic text, partition integer, '
        '"offset" bigint, reason text, detail text, raw bytea) on commit delete rows'
    )
    rows = zip(*(quarantine.column(name).to_pylist() for name in COLUMNS), strict=True)
    with conn.cursor() as cur:
        with cur.copy(
            'copy quarantine_stage (topic, partition, "offset", reason, detail, raw) from stdin'
        ) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            'insert into tripflow.quarantine (topic, partition, "offset", reason, detail, raw) '
            'select topic, partition, "offset", reason, detail, raw from quarantine_stage '
            'order by topic, partition, "offset" on conflict do nothing'
        )
        inserted = cur.rowcount
        cur.execute("delete from quarantine_stage")
    return inserted
