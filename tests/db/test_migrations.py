"""Versioned migrations and the mart contract of spec/marts.md, read from the catalog."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from tripflow import db
from tripflow.processing.hotstore import HotStore

# spec/marts.md: table → (columns in order, primary key columns in order)
MARTS = {
    "mart_session_analysis": (
        ["session_id", "event_date", "click_count", "unique_docs", "first_click_ts",
         "last_click_ts", "session_duration_sec"],
        ["session_id", "event_date"],
    ),
    "mart_daily_traffic": (
        ["event_date", "total_events", "unique_sessions", "unique_documents", "peak_hour"],
        ["event_date"],
    ),
    "mart_clinical_areas": (
        ["event_date", "clinical_area", "search_count", "unique_sessions"],
        ["event_date", "clinical_area"],
    ),
    "mart_popular_documents": (
        ["event_date", "document_id", "title", "view_count", "unique_sessions"],
        ["event_date", "document_id"],
    ),
    "mart_realtime_traffic_minute": (
        ["event_minute", "total_clicks", "unique_sessions", "unique_docs", "updated_at"],
        ["event_minute"],
    ),
    "mart_realtime_top_docs_1h": (
        ["snapshot_ts", "rank", "document_id", "title", "click_count", "unique_sessions"],
        ["snapshot_ts", "rank"],
    ),
    "mart_realtime_clinical_trend_24h": (
        ["snapshot_ts", "clinical_area", "click_count", "unique_sessions", "trend_pct"],
        ["snapshot_ts", "clinical_area"],
    ),
    "mart_realtime_anomaly_sessions": (
        ["detected_ts", "session_id", "window_start", "window_end", "click_count", "severity"],
        ["detected_ts", "session_id"],
    ),
}


def _catalog(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            """select table_name, column_name, data_type, numeric_precision, numeric_scale
               from information_schema.columns where table_schema = 'public'
               order by table_name, ordinal_position"""
        ).fetchall()
        keys = conn.execute(
            """select tc.table_name, kcu.column_name
               from information_schema.table_constraints tc
               join information_schema.key_column_usage kcu
                 on kcu.constraint_name = tc.constraint_name
                and kcu.table_schema = tc.table_schema
               where tc.table_schema = 'public' and tc.constraint_type = 'PRIMARY KEY'
               order by tc.table_name, kcu.ordinal_position"""
        ).fetchall()
        applied = conn.execute(
            "select version, name, checksum from tripflow.schema_migrations order by version"
        ).fetchall()
    return {"columns": columns, "keys": keys, "applied": applied}


def test_marts_have_exactly_the_spec_columns_and_keys(pg_dsn: str) -> None:
    catalog = _catalog(pg_dsn)
    for table, (columns, key) in MARTS.items():
        assert [c[1] for c in catalog["columns"] if c[0] == table] == columns, table
        assert [k[1] for k in catalog["keys"] if k[0] == table] == key, table
    types = {(c[0], c[1]): c[2:] for c in catalog["columns"]}
    assert types[("mart_realtime_clinical_trend_24h", "trend_pct")] == ("numeric", 10, 2)
    assert types[("mart_session_analysis", "first_click_ts")][0] == "timestamp with time zone"
    assert types[("mart_daily_traffic", "event_date")][0] == "date"
    assert types[("mart_popular_documents", "document_id")][0] == "bigint"
    assert types[("mart_clinical_areas", "search_count")][0] == "bigint"


def test_migrating_twice_changes_nothing(pg_dsn: str) -> None:
    before = _catalog(pg_dsn)  # the fixture migrated once already
    assert [row[0] for row in before["applied"]] == [m.version for m in db.migrations()]
    assert db.migrate(pg_dsn) == []
    assert _catalog(pg_dsn) == before


def test_reader_can_select_marts_but_not_write(pg_dsn: str) -> None:
    db.set_reader_password(pg_dsn, "reader-test-pw")
    creds, _, rest = pg_dsn.partition("@")
    scheme = creds.split("://")[0]
    role = db.reader_role_for(db.database_of(pg_dsn))
    reader_dsn = f"{scheme}://{role}:reader-test-pw@{rest}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("insert into mart_daily_traffic values ('2016-01-01', 34, 3, 30, 0)")
    with psycopg.connect(reader_dsn, autocommit=True) as conn:
        for table in MARTS:
            conn.execute(f"select * from {table}")
        assert conn.execute("select total_events from mart_daily_traffic").fetchall() == [(34,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into mart_daily_traffic values ('2016-01-02', 1, 1, 1, 0)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from mart_daily_traffic")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create table public.sneaky (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from tripflow.schema_migrations")


HOT_INSERT = """insert into tripflow.hot_clicks (dedup_key, event_ts, session_id, document_id,
                                                kafka_partition, kafka_offset)
                values (%s, %s, 's1', 7, 0, %s) on conflict do nothing"""


def _indexes(conn: psycopg.Connection, table: str) -> dict[str, str]:
    return dict(conn.execute("select indexname, indexdef from pg_indexes where tablename = %s",
                             (table,)).fetchall())


def test_hot_store_rekeyed_on_event_time_keeps_its_clicks_and_dedup(
        blank_pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """0021 re-keys a populated hot store from (dedup_key, event_ts) to (event_ts,
    dedup_key) and drops the event_ts index the key now replaces; a day partition the
    stream worker creates afterwards gets the same indexes."""
    every = db.migrations()
    monkeypatch.setattr(db, "migrations", lambda: [m for m in every if m.version < 21])
    db.migrate(blank_pg_dsn)
    with psycopg.connect(blank_pg_dsn, autocommit=True) as conn:
        conn.execute("create table tripflow.hot_clicks_p20160101 partition of "
                     "tripflow.hot_clicks for values from ('2016-01-01') to ('2016-01-02')")
        for key, ts, offset in [("a1", "2016-01-01 10:00Z", 1), ("b2", "2016-01-01 09:00Z", 2),
                                ("a1", "2016-01-01 10:00Z", 3)]:
            conn.execute(HOT_INSERT, (key, ts, offset))
    monkeypatch.setattr(db, "migrations", lambda: [m for m in every if m.version <= 21])

    assert db.migrate(blank_pg_dsn) == ["0021_hot_clicks_time_key.sql"]
    with psycopg.connect(blank_pg_dsn, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        indexes = _indexes(conn, "hot_clicks_p20160101")
        assert sorted(indexes) == ["hot_clicks_p20160101_pkey",
                                   "hot_clicks_p20160101_session_id_event_ts_idx"]
        assert indexes["hot_clicks_p20160101_pkey"].endswith("btree (event_ts, dedup_key)")
        # the same click again is still one row; another time under the same key is another
        conn.execute(HOT_INSERT, ("a1", "2016-01-01 10:00Z", 4))
        conn.execute(HOT_INSERT, ("a1", "2016-01-01 11:00Z", 5))
        rows = conn.execute("select dedup_key, event_ts::text, kafka_offset "
                            "from tripflow.hot_clicks order by kafka_offset").fetchall()
    assert rows == [("a1", "2016-01-01 10:00:00+00", 1), ("b2", "2016-01-01 09:00:00+00", 2),
                    ("a1", "2016-01-01 11:00:00+00", 5)]
    store = HotStore(blank_pg_dsn, "t")
    try:
        store.ensure_partitions([dt.date(2016, 1, 2)])
    finally:
        store.close()
    with psycopg.connect(blank_pg_dsn) as conn:
        indexes = _indexes(conn, "hot_clicks_p20160102")
    assert sorted(indexes) == ["hot_clicks_p20160102_pkey",
                               "hot_clicks_p20160102_session_id_event_ts_idx"]
    assert indexes["hot_clicks_p20160102_pkey"].endswith("btree (event_ts, dedup_key)")
