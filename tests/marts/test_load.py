"""PostgreSQL loading: the numpy-built binary COPY and the CSV COPY give back exactly the
Arrow values, including nulls, empty and multi-line text, dates and timestamps."""

from __future__ import annotations

import datetime as dt

import psycopg
import pyarrow as pa

from tripflow.marts.load import copy_arrow, copy_binary, primary_keys

UTC = dt.UTC
TABLE = pa.table({
    "t": pa.array(["plain", "", None, "multi\nline \"quoted\", comma\ttab", "ünïcødé ✓", "x" * 300],
                  pa.string()),
    "d": pa.array([dt.date(2016, 1, 1), dt.date(1999, 12, 31), None, dt.date(2000, 1, 1),
                   dt.date(2020, 10, 28), dt.date(1970, 1, 1)], pa.date32()),
    "ts": pa.array([dt.datetime(2016, 1, 1, 0, 1, 41, 933000, tzinfo=UTC),
                    dt.datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), None,
                    dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC),
                    dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)], pa.timestamp("ms", tz="UTC")),
    "b": pa.array([0, -1, None, 2**62 + 1, -(2**62) - 3, 42], pa.int64()),
    "i": pa.array([0, -5, 7, None, 2**31 - 1, -(2**31)], pa.int32()),
})
DDL = "create temp table {} (t text, d date, ts timestamptz, b bigint, i integer)"


def test_binary_and_csv_copy_round_trip(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        for name in ("via_binary", "via_csv"):
            conn.execute(DDL.format(name))
        copy_binary(conn, "via_binary", TABLE, ["text", "date", "timestamp with time zone",
                                                "bigint", "integer"])
        copy_arrow(conn, "via_csv", TABLE)
        expected = [tuple(row.values()) for row in TABLE.to_pylist()]
        for name in ("via_binary", "via_csv"):
            rows = conn.execute(f"select t, d, ts, b, i from {name}").fetchall()
            assert sorted(rows, key=repr) == sorted(expected, key=repr), name
        # Slices (non-zero Arrow offsets) encode the same way.
        conn.execute(DDL.format("sliced"))
        copy_binary(conn, "sliced", TABLE.slice(2, 3), ["text", "date",
                                                         "timestamp with time zone", "bigint",
                                                         "integer"])
        rows = conn.execute("select t, d, ts, b, i from sliced").fetchall()
        assert sorted(rows, key=repr) == sorted(expected[2:5], key=repr)


def test_primary_keys_in_key_order(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, options="-c search_path=public") as conn:
        keys = primary_keys(conn, ["mart_session_analysis", "mart_popular_documents"])
    assert keys == {"mart_session_analysis": ["session_id", "event_date"],
                    "mart_popular_documents": ["event_date", "document_id"]}
