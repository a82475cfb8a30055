"""The read-only role belongs to one database: two databases of one server each have their
own reader, migrating one never changes the other's, and neither reads the other's marts."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tripflow import db
from tripflow.services import Endpoints
from tripflow.settings import Settings

MARTS = ["mart_session_analysis", "mart_daily_traffic", "mart_clinical_areas",
         "mart_popular_documents", "mart_realtime_traffic_minute", "mart_realtime_top_docs_1h",
         "mart_realtime_clinical_trend_24h", "mart_realtime_anomaly_sessions",
         "mart_hourly_traffic"]


@pytest.fixture
def two_databases(endpoints: Endpoints) -> Iterator[tuple[str, str]]:
    """Two fresh, unmigrated databases of the test server; dropped afterwards."""
    base = endpoints.pg_dsn.rpartition("/")[0]
    names = [f"t_{uuid.uuid4().hex[:10]}_{side}" for side in "ab"]
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'create database "{name}"')
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')


def _as_reader(settings: Settings) -> str:
    dsn = settings.pg_dsn or ""
    return psycopg.conninfo.make_conninfo(dsn, user=db.reader_role(settings),
                                          password=db.reader_password(settings))


def _reader_password_works(settings: Settings) -> bool:
    try:
        with psycopg.connect(_as_reader(settings), connect_timeout=5) as conn:
            conn.execute("select 1")
        return True
    except psycopg.OperationalError:
        return False


def test_reader_role_names() -> None:
    assert db.reader_role_for("tripflow") == "tripflow_reader"  # existing installs keep it
    assert db.reader_role_for("analytics") == "tripflow_reader_analytics"
    odd = db.reader_role_for("Clinic-DB 2")
    assert re.fullmatch(r"tripflow_reader_clinic_db_2_[0-9a-f]{8}", odd)
    assert db.reader_role_for("Clinic-DB 2") == odd  # deterministic
    assert db.reader_role_for("clinic_db_2") != odd  # slugs alike, roles apart
    long = db.reader_role_for("d" * 63)
    assert len(long.encode()) <= 63 and long != db.reader_role_for("d" * 62)
    assert len(db.reader_role_for("é" * 31).encode()) <= 63
    assert db.database_of("postgresql://u:p@h:5432/marts?sslmode=require") == "marts"
    assert db.database_of("host=h dbname=tf user=u") == "tf"
    assert db.reader_role(Settings(pg_dsn="postgresql://u:p@h/other")) == "tripflow_reader_other"
    assert db.reader_role(Settings(pg_dsn=None)) == "tripflow_reader"  # the embedded one
    assert db.reader_role(Settings(pg_dsn="postgresql://u:p@h/other",
                                   reader_role="bi_reader")) == "bi_reader"


def test_two_databases_of_one_server_have_their_own_readers(
        two_databases: tuple[str, str], tmp_path: Path) -> None:
    dsn_a, dsn_b = two_databases
    a = Settings(home=tmp_path / "a", pg_dsn=dsn_a)
    b = Settings(home=tmp_path / "b", pg_dsn=dsn_b)
    db.prepare(a)
    assert _reader_password_works(a)
    db.prepare(b)  # migrating the second database...
    assert db.reader_role(a) != db.reader_role(b)
    assert db.reader_password(a) != db.reader_password(b)
    assert _reader_password_works(a)  # ...leaves the first one's reader as it was
    assert _reader_password_works(b)

    for owner, reader in ((a, b), (b, a)):
        with psycopg.connect(owner.pg_dsn or "", autocommit=True) as conn:
            conn.execute("insert into mart_daily_traffic values ('2016-01-01', 34, 3, 30, 0)")
        # The other database's reader may open a session (PUBLIC's CONNECT) but read nothing.
        foreign = psycopg.conninfo.make_conninfo(owner.pg_dsn or "", user=db.reader_role(reader),
                                                 password=db.reader_password(reader))
        with psycopg.connect(foreign, autocommit=True) as conn:
            for table in MARTS:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"select * from public.{table}")

    for settings in (a, b):
        with psycopg.connect(_as_reader(settings), autocommit=True) as conn:
            for table in MARTS:
                conn.execute(f"select * from public.{table}")
            assert conn.execute("select total_events from mart_daily_traffic").fetchall() == [(34,)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("insert into mart_daily_traffic values ('2016-01-02', 1, 1, 1, 0)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("update mart_daily_traffic set total_events = 0")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("create table public.sneaky (x int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from tripflow.schema_migrations")


def test_databases_sharing_a_home_keep_their_own_password_files(
        two_databases: tuple[str, str], tmp_path: Path) -> None:
    dsn_a, dsn_b = two_databases
    a = Settings(home=tmp_path / "home", pg_dsn=dsn_a)
    b = Settings(home=tmp_path / "home", pg_dsn=dsn_b)
    db.prepare(a)
    db.prepare(b)
    files = sorted(p.name for p in a.home_dir.glob("reader_password*"))
    assert files == sorted(f"reader_password.{db.reader_role(s)}" for s in (a, b))
    assert _reader_password_works(a) and _reader_password_works(b)
    # TRIPFLOW_READER_ROLE and TRIPFLOW_READER_PASSWORD name the role and fix its password.
    role = f"bi_{uuid.uuid4().hex[:8]}"
    custom = Settings(home=tmp_path / "home", pg_dsn=dsn_a, reader_role=role,
                      reader_password="fixed-reader-pw")
    db.prepare(custom)
    with psycopg.connect(psycopg.conninfo.make_conninfo(dsn_a, user=role,
                                                        password="fixed-reader-pw")) as conn:
        assert conn.execute("select count(*) from mart_daily_traffic").fetchone() == (0,)


def test_upgrade_moves_the_shared_readers_grants_to_the_databases_own(
        two_databases: tuple[str, str]) -> None:
    """A database migrated when every database granted to the shared `tripflow_reader`:
    the next migrate gives its grants to its own reader and takes them from the shared one
    (whose password and grants in other databases stay as they were)."""
    dsn, _ = two_databases
    with psycopg.connect(dsn, autocommit=True) as conn:  # what the migrations did until now
        conn.execute("set search_path to public")
        conn.execute("create schema tripflow")
        conn.execute("create table tripflow.schema_migrations (version integer primary key, "
                     "name text not null, checksum text not null, "
                     "applied_at timestamptz not null default now())")
        for migration in db.migrations():
            conn.execute(migration.sql)
            conn.execute("insert into tripflow.schema_migrations (version, name, checksum) "
                         "values (%s, %s, %s)",
                         (migration.version, migration.name, migration.checksum))
        assert conn.execute("select has_table_privilege('tripflow_reader', "
                            "'public.mart_daily_traffic', 'SELECT')").fetchone() == (True,)

    assert db.migrate(dsn) == []  # nothing left to apply, but the grants move
    own = db.reader_role_for(db.database_of(dsn))
    with psycopg.connect(dsn) as conn:
        for table in MARTS:
            assert conn.execute("select has_table_privilege(%s, %s, 'SELECT'), "
                                "has_table_privilege('tripflow_reader', %s, 'SELECT')",
                                (own, f"public.{table}", f"public.{table}")).fetchone() \
                == (True, False), table
