"""Arrow → PostgreSQL: the ways to COPY a mart-sized Arrow table, compared on one server.

Candidates (each loads the same table into an empty table with the mart's primary key and
commits; best and median of --repeat runs):
- `tripflow_binary`: tripflow.db.copy's binary COPY rows (built by Arrow kernels), over psycopg;
- `arrow_csv`: Arrow's CSV writer, over psycopg's COPY (tripflow.db.copy.copy_csv);
- `psycopg_binary_rows`: psycopg 3's own binary COPY (`set_types` + `write_row`), rows
  taken from the Arrow batches;
- `adbc_ingest`: `adbc-driver-postgresql`'s `adbc_ingest` (mode append), when installed.
  It needs its own connection (ADBC's, not psycopg's), so it cannot join the caller's
  transaction: a mart's delete-dates-then-COPY would be two transactions.

Tables: `sessions` (mart_session_analysis: text id, date, 3 bigint, 2 timestamptz) and
`documents` (mart_popular_documents: date, bigint, title text, 2 bigint; text-heavy).

Prints one JSON object: rows/s per table and candidate.

Run: PYTHONPATH=src python bench/bench_copy.py [--rows N] [--repeat R] [--dsn DSN] [--home DIR]
Without --dsn the embedded PostgreSQL under --home (default ./.tripflow-bench) is used,
in a new database dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa

from tripflow import services
from tripflow.db import copy as pgcopy
from tripflow.settings import Settings

TABLES = {
    "sessions": ("session_id text not null, event_date date not null, click_count bigint, "
                 "unique_docs bigint, first_click_ts timestamptz, last_click_ts timestamptz, "
                 "session_duration_sec bigint, primary key (session_id, event_date)"),
    "documents": ("event_date date not null, document_id bigint not null, title text, "
                  "view_count bigint, unique_sessions bigint, "
                  "primary key (event_date, document_id)"),
}


def make_tables(rows: int, seed: int = 7) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    days = rng.integers(16_800, 16_830, rows).astype(np.int32)  # 2016
    hex_ids = rng.integers(0, 2**63, rows, dtype=np.int64)
    session_id = pa.array([f"{v:016x}{v % 99_991:08x}" for v in hex_ids.tolist()], pa.string())
    first_ms = days.astype(np.int64) * 86_400_000 + rng.integers(0, 86_400_000, rows)
    duration_ms = rng.integers(0, 3_600_000, rows)
    sessions = pa.table({
        "session_id": session_id,
        "event_date": pa.array(days, pa.date32()),
        "click_count": pa.array(rng.integers(1, 40, rows)),
        "unique_docs": pa.array(rng.integers(1, 30, rows)),
        "first_click_ts": pa.array(first_ms, pa.timestamp("ms", tz="UTC")),
        "last_click_ts": pa.array(first_ms + duration_ms, pa.timestamp("ms", tz="UTC")),
        "session_duration_sec": pa.array(duration_ms // 1000),
    })
    words = ["randomised", "trial", "of", "aspirin", "in", "acute", "coronary", "syndrome",
             "systematic", "review", "children", "asthma", "guideline", "diabetes", "care"]
    title_words = rng.integers(0, len(words), (rows, 9))
    titles = [" ".join(words[i] for i in row) for row in title_words[:, : rng.integers(4, 10)]]
    documents = pa.table({
        "event_date": pa.array(days, pa.date32()),
        "document_id": pa.array(np.arange(rows, dtype=np.int64) + 1_000_000),
        "title": pa.array(titles, pa.string()),
        "view_count": pa.array(rng.integers(1, 500, rows)),
        "unique_sessions": pa.array(rng.integers(1, 400, rows)),
    })
    return {"sessions": sessions, "documents": documents}


def _types(conn: psycopg.Connection, table: str, data: pa.Table) -> list[str]:
    found = pgcopy.column_types(conn, table)
    return [found[name] for name in data.column_names]


def tripflow_binary(dsn: str, table: str, data: pa.Table) -> None:
    with psycopg.connect(dsn) as conn:
        pgcopy.copy_binary(conn, table, data, _types(conn, table, data))


def arrow_csv(dsn: str, table: str, data: pa.Table) -> None:
    with psycopg.connect(dsn) as conn:
        pgcopy.copy_csv(conn, table, data)


def psycopg_binary_rows(dsn: str, table: str, data: pa.Table) -> None:
    columns = ", ".join(data.column_names)
    with psycopg.connect(dsn) as conn:
        types = _types(conn, table, data)
        with conn.cursor() as cur, cur.copy(
                f"copy {table} ({columns}) from stdin (format binary)") as copy:
            copy.set_types(types)
            for batch in data.to_batches(max_chunksize=100_000):
                for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                    copy.write_row(row)


def adbc_ingest(dsn: str, table: str, data: pa.Table) -> None:
    import adbc_driver_postgresql.dbapi as adbc  # optional: pip install adbc-driver-postgresql

    with adbc.connect(dsn) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, data, mode="append")
        conn.commit()


CANDIDATES: dict[str, Callable[[str, str, pa.Table], None]] = {
    "tripflow_binary": tripflow_binary,
    "arrow_csv": arrow_csv,
    "psycopg_binary_rows": psycopg_binary_rows,
    "adbc_ingest": adbc_ingest,
}


def measure(dsn: str, name: str, data: pa.Table, load: Callable[..., None],
            repeat: int) -> dict[str, object]:
    seconds = []
    for _ in range(repeat):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"drop table if exists {name}")
            conn.execute(f"create table {name} ({TABLES[name]})")
        started = time.perf_counter()
        load(dsn, name, data)
        seconds.append(time.perf_counter() - started)
        with psycopg.connect(dsn) as conn:
            (count,) = conn.execute(f"select count(*) from {name}").fetchone()  # type: ignore[misc]
        assert count == data.num_rows, (name, load.__name__, count)
    return {"best_rows_per_s": round(data.num_rows / min(seconds)),
            "median_rows_per_s": round(data.num_rows / statistics.median(seconds)),
            "best_s": round(min(seconds), 3)}


def fresh_database(home: Path) -> tuple[str, Callable[[], None]]:
    server = services.pg_dsn(Settings(home=home))
    name = f"bench_copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    return f"{server.rpartition('/')[0]}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    parser.add_argument("--skip", action="append", default=[],
                        help="candidate to leave out (repeatable)")
    args = parser.parse_args()
    dsn, drop = (args.dsn, lambda: None) if args.dsn else fresh_database(args.home)
    try:
        tables = make_tables(args.rows)
        result: dict[str, object] = {"rows": args.rows, "repeat": args.repeat}
        for table, data in tables.items():
            figures: dict[str, object] = {}
            for candidate, load in CANDIDATES.items():
                if candidate in args.skip:
                    continue
                try:
                    figures[candidate] = measure(dsn, table, data, load, args.repeat)
                except ImportError as err:
                    figures[candidate] = f"not installed: {err}"
            result[table] = figures
        print(json.dumps(result, indent=2))
    finally:
        drop()


if __name__ == "__main__":
    main()
