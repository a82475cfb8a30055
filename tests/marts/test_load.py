"""PostgreSQL loading (tripflow.db.copy): the numpy-built binary COPY and the CSV COPY give
back exactly the Arrow values, including nulls, empty and multi-line text, dates,
timestamps and bytes; copy_arrow writes binary when it supports every column type. A
mart's first build loads without its indexes and makes the same ones again."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pyarrow as pa
import pytest

from tripflow.db.copy import (
    binary_supports,
    column_types,
    copy_arrow,
    copy_binary,
    copy_csv,
    encode,
)
from tripflow.marts.load import (
    FirstBuild,
    empty_tables,
    first_build,
    primary_keys,
    replace_dates,
)

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


SESSIONS = "mart_session_analysis"
INDEXES = "select indexname, indexdef from pg_indexes where tablename = %s order by 1"
DAY1, DAY2 = dt.date(2016, 3, 1), dt.date(2016, 3, 2)


def _sessions(day: dt.date, *session_ids: str) -> pa.Table:
    """mart_session_analysis rows of one day, one per session: two clicks, 90 s apart."""
    first = dt.datetime.combine(day, dt.time(8), tzinfo=UTC)
    n = len(session_ids)
    return pa.table({
        "session_id": pa.array(session_ids, pa.string()),
        "event_date": pa.array([day] * n, pa.date32()),
        "click_count": pa.array([2] * n, pa.int64()),
        "unique_docs": pa.array([1] * n, pa.int64()),
        "first_click_ts": pa.array([first] * n, pa.timestamp("ms", tz="UTC")),
        "last_click_ts": pa.array([first + dt.timedelta(seconds=90)] * n,
                                  pa.timestamp("ms", tz="UTC")),
        "session_duration_sec": pa.array([90] * n, pa.int64()),
    })


def _keys(conn: psycopg.Connection) -> list[tuple[str, dt.date]]:
    return conn.execute(f"select session_id, event_date from {SESSIONS} order by 1, 2").fetchall()


def test_a_first_build_loads_without_indexes_and_makes_the_same_ones(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True, options="-c search_path=public") as conn:
        made = conn.execute(INDEXES, (SESSIONS,)).fetchall()
        assert [name for name, _ in made] == ["mart_session_analysis_date",
                                              "mart_session_analysis_pkey"]
        assert SESSIONS in empty_tables(conn, [SESSIONS, "mart_daily_traffic"])
        with conn.transaction():
            building = first_build(conn, SESSIONS)
            assert building is not None
            assert conn.execute(INDEXES, (SESSIONS,)).fetchall() == []
            assert replace_dates(conn, SESSIONS, [DAY1], _sessions(DAY1, "a", "b"),
                                 first_build=True) == (0, 2)
            assert replace_dates(conn, SESSIONS, [DAY2], _sessions(DAY2, "a"),
                                 first_build=True) == (0, 1)
            building.finish(conn)
        assert conn.execute(INDEXES, (SESSIONS,)).fetchall() == made
        assert _keys(conn) == [("a", DAY1), ("a", DAY2), ("b", DAY1)]

        # A mart with rows: the usual per-date replace, indexes kept, and no lock left
        # for readers to wait on (another connection reads while this one loads).
        assert empty_tables(conn, [SESSIONS]) == set()
        with conn.transaction():
            assert first_build(conn, SESSIONS) is None
            with psycopg.connect(pg_dsn, options="-c lock_timeout=2s") as reader:
                assert reader.execute(f"select count(*) from {SESSIONS}").fetchone() == (3,)
            assert replace_dates(conn, SESSIONS, [DAY1], _sessions(DAY1, "c")) == (2, 1)
        assert conn.execute(INDEXES, (SESSIONS,)).fetchall() == made
        assert _keys(conn) == [("a", DAY2), ("c", DAY1)]
        # The primary key made again is enforced.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            replace_dates(conn, SESSIONS, [DAY1], _sessions(DAY1, "d", "d"))
        assert _keys(conn) == [("a", DAY2), ("c", DAY1)]


def test_a_failed_first_build_leaves_the_mart_empty_with_its_indexes(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True, options="-c search_path=public") as conn:
        made = conn.execute(INDEXES, (SESSIONS,)).fetchall()
        # Duplicate keys load while the primary key is away; making it again fails, and
        # the transaction takes everything back.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            building = first_build(conn, SESSIONS)
            assert building is not None
            replace_dates(conn, SESSIONS, [DAY1], _sessions(DAY1, "a", "a"), first_build=True)
            building.finish(conn)
        assert conn.execute(INDEXES, (SESSIONS,)).fetchall() == made
        assert _keys(conn) == []


def test_two_first_builds_at_once_one_builds_and_the_other_replaces(pg_dsn: str) -> None:
    """Two runs both found the mart empty: the second waits for the first's lock, then
    finds its rows and takes the usual per-date replace, leaving no lock behind."""
    options = "-c search_path=public"
    with psycopg.connect(pg_dsn, autocommit=True, options=options) as first, \
            psycopg.connect(pg_dsn, autocommit=True, options=options) as second, \
            psycopg.connect(pg_dsn, autocommit=True, options=options) as watcher, \
            ThreadPoolExecutor(1) as pool:
        made = watcher.execute(INDEXES, (SESSIONS,)).fetchall()
        assert empty_tables(first, [SESSIONS]) == empty_tables(second, [SESSIONS]) == {SESSIONS}

        def second_run() -> tuple[FirstBuild | None, tuple[int, int], int]:
            with second.transaction():
                found = first_build(second, SESSIONS)
                counts = replace_dates(second, SESSIONS, [DAY1], _sessions(DAY1, "b", "c"),
                                       first_build=found is not None)
                # Readers wait for nothing now: this run holds no exclusive lock.
                exclusive = watcher.execute(
                    "select count(*) from pg_locks where relation = %s::regclass "
                    "and mode = 'AccessExclusiveLock'", (SESSIONS,)).fetchone()[0]
            return found, counts, exclusive

        with first.transaction():
            building = first_build(first, SESSIONS)
            assert building is not None
            replace_dates(first, SESSIONS, [DAY1], _sessions(DAY1, "a"), first_build=True)
            waiting = pool.submit(second_run)
            deadline = time.monotonic() + 10
            while not watcher.execute("select exists (select from pg_locks where not granted "
                                      "and relation = %s::regclass)", (SESSIONS,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the second run never waited for the lock"
                time.sleep(0.05)
            building.finish(first)
        found, counts, exclusive = waiting.result(timeout=30)
        assert (found, counts, exclusive) == (None, (1, 2), 0)
        assert _keys(watcher) == [("b", DAY1), ("c", DAY1)]
        assert watcher.execute(INDEXES, (SESSIONS,)).fetchall() == made
