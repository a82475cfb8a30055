"""PostgreSQL loading (tripflow.db.copy): the numpy-built binary COPY and the CSV COPY give
back exactly the Arrow values, including nulls, empty and multi-line text, dates,
timestamps and bytes; copy_arrow writes binary when it supports every column type."""

from __future__ import annotations

import datetime as dt

import psycopg
import pyarrow as pa

from tripflow.db.copy import (
    binary_supports,
    column_types,
    copy_arrow,
    copy_binary,
    copy_csv,
    encode,
)
from tripflow.marts.load import primary_keys

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
        copy_csv(conn, "via_csv", TABLE)
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


def test_copy_arrow_reads_the_types_and_round_trips(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute(DDL.format("chosen"))
        types = column_types(conn, "chosen")
        assert types == {"t": "text", "d": "date", "ts": "timestamp with time zone",
                         "b": "bigint", "i": "integer"}
        assert binary_supports(list(types.values()))
        assert binary_supports(["text", "bigint", "bytea"])
        assert not binary_supports(["text[]", "bigint"]) and not binary_supports(["boolean"])
        assert copy_arrow(conn, "chosen", TABLE) == TABLE.num_rows
        assert copy_arrow(conn, "chosen", TABLE.slice(0, 0)) == 0
        rows = conn.execute("select t, d, ts, b, i from chosen").fetchall()
        expected = [tuple(row.values()) for row in TABLE.to_pylist()]
        assert sorted(rows, key=repr) == sorted(expected, key=repr)


def test_binary_copy_of_bytes(pg_dsn: str) -> None:
    data = pa.table({"raw": pa.array([b"", None, b"\x00\xff\n\\", b"x" * 70_000], pa.binary()),
                     "n": pa.array([1, 2, None, 4], pa.int64())})
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("create temp table raw_bytes (raw bytea, n bigint)")
        copy_arrow(conn, "raw_bytes", data)
        rows = conn.execute("select raw, n from raw_bytes order by n nulls last").fetchall()
    assert rows == [(b"", 1), (None, 2), (b"x" * 70_000, 4), (b"\x00\xff\n\\", None)]


def test_binary_rows_byte_for_byte() -> None:
    # Per row: field count, then per field its length (-1: NULL, no value) and value.
    data = pa.table({"t": pa.array(["ab", None, ""], pa.string()),
                     "i": pa.array([1, None, -2], pa.int32()),
                     "d": pa.array([dt.date(2000, 1, 2), dt.date(1999, 12, 31), None])})
    count, null = b"\x00\x03", b"\xff\xff\xff\xff"
    expected = (count + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x04\x00\x00\x00\x01"
                + b"\x00\x00\x00\x04\x00\x00\x00\x01"
                + count + null + null + b"\x00\x00\x00\x04\xff\xff\xff\xff"
                + count + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x04\xff\xff\xff\xfe" + null)
    [batch] = data.to_batches()
    assert bytes(encode(batch, ["text", "integer", "date"])) == expected
    # A slice (non-zero Arrow offsets): rows 2 and 3, after row 1's 24 bytes.
    [sliced] = data.slice(1, 2).to_batches()
    assert bytes(encode(sliced, ["text", "integer", "date"])) == expected[24:]


def test_primary_keys_in_key_order(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, options="-c search_path=public") as conn:
        keys = primary_keys(conn, ["mart_session_analysis", "mart_popular_documents"])
    assert keys == {"mart_session_analysis": ["session_id", "event_date"],
                    "mart_popular_documents": ["event_date", "document_id"]}
