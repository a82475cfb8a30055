"""The Spark engine against the DuckDB engine: the same bronze through each gives the same
silver (row for row), quarantine and cold marts (PostgreSQL and gold), equal to the
independent computation of tests/kits/batchkit; and each engine updates what the other
wrote (late records rebuild their dates on the other engine).

One Spark session (local[2]) for the module: it takes about 7 s and 700 MB to start.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable

from tests.kits import batchkit
from tripflow import db, lake
from tripflow.marts import run_marts
from tripflow.marts.articles import load_articles
from tripflow.marts.engine import mart_names
from tripflow.processing.silver import SILVER_SCHEMA, run_silver
from tripflow.records.generate import generate
from tripflow.settings import Settings
from tripflow.spark import session as spark_session

START = dt.date(2016, 3, 1)
DAYS = 3


@pytest.fixture
def second_dsn(endpoints, test_id: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A second fresh, migrated database: the Spark run's own quarantine, state and marts."""
    name = f"t_{test_id}_spark"
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = f"{endpoints.pg_dsn.rpartition('/')[0]}/{name}"
    db.migrate(dsn)
    yield dsn
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    started = spark_session.session(Settings(spark_master="local[2]", spark_conf=None))
    yield started
    spark_session.stop()


def silver_rows(settings: Settings) -> list[tuple]:
    """Every silver row, every column, in dedup_key order."""
    table = DeltaTable(lake.table_uri(settings, lake.SILVER)).to_pyarrow_table()
    table = table.select(SILVER_SCHEMA.names).sort_by("dedup_key")
    return [tuple(row.values()) for row in table.to_pylist()]


def gold_rows(settings: Settings) -> dict[str, set[tuple]]:
    found = {}
    for mart in mart_names():
        table = DeltaTable(lake.table_uri(settings, lake.gold(mart))).to_pyarrow_table()
        found[mart] = {tuple(row.values()) for row in table.to_pylist()}
    return found


def postgres_rows(settings: Settings) -> dict[str, set[tuple]]:
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        return {mart: set(conn.execute(f"select * from {mart}").fetchall())
                for mart in mart_names()}


def check_marts(settings: Settings, sent: list[batchkit.Sent]) -> None:
    """PostgreSQL's and gold's marts are the known answer (titles from the catalogue the
    database holds, when one was loaded)."""
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        catalogue = dict(conn.execute("select document_id, title from tripflow.articles"))
        want = batchkit.expected_marts(batchkit.truth(sent).clicks, catalogue or None)
        for mart in mart_names():
            assert batchkit.pg_mart_rows(conn, mart) == want[mart], mart
            gold = DeltaTable(lake.table_uri(settings, lake.gold(mart))).to_pyarrow_table()
            columns = [c.strip() for c in batchkit.MART_COLUMNS[mart].split(",")]
            got = set(zip(*(gold.column(c).to_pylist() for c in columns), strict=True))
            assert got == want[mart], mart
        # The hot traffic-minute mart, reconciled from silver by the same engine.
        assert batchkit.pg_mart_rows(conn, "traffic_minute") == want["traffic_minute"]


def quarantine_rows(settings: Settings) -> set[tuple]:
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        return set(conn.execute("select raw, reason, detail, seen_count "
                                "from tripflow.quarantine").fetchall())


def test_both_engines_give_the_same_silver_and_marts_and_update_each_other(
        spark: object, settings: Settings, second_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "days"
    generate(out, start=START, days=DAYS, seed=11, sessions_per_day=120, dup_rate=0.02,
             late_rate=0.02, bad_rate=0.01, bots=1)
    lines = batchkit.file_lines(batchkit.day_files(out)) + batchkit.edge_lines(START)
    lines.append(batchkit.record(batchkit.at(START, 8), "space" * 5, 7, areas="Space Medicine"))
    # Duplicates across servers: the same lines again, at later positions.
    lines += lines[:50]
    duck = settings
    spark_lake = tmp_path / "spark-lake"
    on_spark = settings.model_copy(update={"lake_uri": str(spark_lake), "pg_dsn": second_dsn})
    sent = batchkit.write_bronze(duck, lines, partitions=3)
    shutil.copytree(duck.lake, spark_lake)  # the same bronze, byte for byte

    by_duck = run_silver(duck, engine="duckdb")
    by_spark = run_silver(on_spark, engine="spark")
    assert by_spark.engine == "spark"
    assert by_spark.dates == by_duck.dates == [START + dt.timedelta(days=i)
                                               for i in range(len(by_duck.dates))]
    for name in ("rows_in", "clicks", "duplicates", "quarantined", "quarantined_new",
                 "undated", "misplaced", "nul_removed"):
        assert getattr(by_spark, name) == getattr(by_duck, name), name
    assert by_duck.duplicates >= 50 and by_duck.quarantined > by_duck.undated > 0
    assert quarantine_rows(on_spark) == quarantine_rows(duck)
    assert silver_rows(on_spark) == silver_rows(duck)
    assert len(silver_rows(duck)) == len(batchkit.truth(sent).clicks)

    # The generated catalogue: popular documents' titles come from it (blank ones fall back
    # to the clicks' titles).
    for each in (duck, on_spark):
        assert load_articles(each, out / "allarticles.txt").articles > 0
    marts_duck = run_marts(duck, engine="duckdb")
    assert marts_duck.titles_from_articles
    in_postgres = postgres_rows(duck)
    check_marts(duck, sent)
    marts_spark = run_marts(on_spark, engine="spark")
    assert marts_spark.engine == "spark"
    assert marts_spark.rows_out == marts_duck.rows_out
    assert marts_spark.rows_in == marts_duck.rows_in
    assert postgres_rows(on_spark) == in_postgres
    assert gold_rows(on_spark) == gold_rows(duck)
    check_marts(on_spark, sent)
    for mart in mart_names():  # created by Spark, checkpointed as delta-rs's tables are
        gold = DeltaTable(lake.table_uri(on_spark, lake.gold(mart)))
        assert gold.metadata().configuration == {"delta.checkpointInterval": "10"}, mart

    # Late records (and a late duplicate) of the first date arrive in both lakes; each engine
    # now rebuilds what the other wrote: silver and gold of the other engine's tables.
    late = [batchkit.record(batchkit.at(START, 22, i), f"late{i:020d}", 4000 + i,
                            areas="Oncology") for i in range(5)]
    late.append(lines[0])
    read_ms = int(time.time() * 1000)
    sent += batchkit.write_bronze(duck, late, partitions=3, read_ms=read_ms)
    assert batchkit.write_bronze(on_spark, late, partitions=3, read_ms=read_ms
                                 ) == sent[-len(late):]
    assert run_silver(duck, engine="spark").dates == [START]
    assert run_silver(on_spark, engine="duckdb").dates == [START]
    assert silver_rows(duck) == silver_rows(on_spark)
    assert len(silver_rows(duck)) == len(batchkit.truth(sent).clicks)
    assert run_marts(duck, engine="spark").dates == [START]
    in_postgres = postgres_rows(duck)
    check_marts(duck, sent)
    assert run_marts(on_spark, engine="duckdb").dates == [START]
    assert postgres_rows(on_spark) == in_postgres
    assert gold_rows(on_spark) == gold_rows(duck)
    check_marts(on_spark, sent)

    # Every date's marts again, each engine reading silver the other wrote.
    run_marts(duck, by_duck.dates, engine="spark")
    check_marts(duck, sent)
    run_marts(on_spark, by_duck.dates, engine="duckdb")
    check_marts(on_spark, sent)
    assert gold_rows(on_spark) == gold_rows(duck)


def test_spark_settings_parse() -> None:
    assert spark_session.parse_conf("spark.executor.memory=2g, spark.sql.x=1") == {
        "spark.executor.memory": "2g", "spark.sql.x": "1"}
    with pytest.raises(spark_session.SparkConfError, match="not `spark"):
        spark_session.parse_conf("executor.memory=2g")
    assert spark_session.spark_path("s3://bucket/lake") == "s3a://bucket/lake"


def test_backfill_command_takes_the_engine_from_the_environment(
        spark: object, settings: Settings, tripflow_env: dict[str, str]) -> None:
    """`TRIPFLOW_ENGINE=spark tripflow backfill` (in this process: the module's session)."""
    from typer.testing import CliRunner

    from tripflow.cli.main import app

    lines = [batchkit.record(batchkit.at(START, 23, 59, i), "night" * 5, 50 + i % 3,
                             areas="Space Medicine,cardiology") for i in range(3)]
    lines += [batchkit.record(batchkit.at(START + dt.timedelta(days=1), 0, 0, i), "night" * 5,
                              60 + i) for i in range(2)]
    sent = batchkit.write_bronze(settings, lines + lines[:2], partitions=2)
    result = CliRunner().invoke(app, ["backfill", "--from", str(START), "--to",
                                      str(START + dt.timedelta(days=1))],
                                env={**tripflow_env, "TRIPFLOW_ENGINE": "spark"})
    assert result.exit_code == 0, result.output
    assert "silver (spark): 2 dates" in result.output and "2 duplicates" in result.output
    assert "marts (spark): 2 dates" in result.output
    check_marts(settings, sent)
