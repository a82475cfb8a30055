"""`airflow dags test` runs tripflow_daily and tripflow_backfill end to end against the
embedded services with generated data; the cold marts then hold the manifest's truth."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import psycopg
import pytest
from airflow_env import ROOT, airflow_bin

from tripflow.ingestion import produce
from tripflow.processing.stream import run_stream
from tripflow.records.generate import generate


@pytest.fixture
def airflow_env(tmp_path: Path, tripflow_env: dict[str, str]) -> dict[str, str]:
    env = {**tripflow_env,
           "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    _airflow(["db", "migrate"], env)
    return env


def _airflow(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([str(airflow_bin() / "airflow"), *args], env=env, text=True,
                            capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def _cold_marts(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            "daily": conn.execute("select event_date, total_events, unique_sessions, "
                                  "unique_documents from mart_daily_traffic "
                                  "order by event_date").fetchall(),
            "sessions": conn.execute("select event_date, count(*) from mart_session_analysis "
                                     "group by 1 order by 1").fetchall(),
        }


def test_daily_then_backfill_fill_the_cold_marts(settings, airflow_env, tmp_path: Path) -> None:
    data = tmp_path / "data"
    manifest = generate(data, start=dt.date(2016, 3, 1), days=2, sessions_per_day=150, seed=7,
                        dup_rate=0.02, late_rate=0.01, bad_rate=0.01)
    summary = produce([data], settings, servers=2)
    assert summary.ok and summary.delivered == manifest.totals.lines
    run_stream(settings, until_idle=3)  # the freshness check needs a hot-path commit

    output = _airflow(["dags", "test", "tripflow_daily"], airflow_env)
    assert "hot_freshness" in output

    expected_daily = [
        (dt.date.fromisoformat(day), truth.clicks, truth.sessions, truth.documents)
        for day, truth in manifest.days.items()
    ]
    expected_sessions = [(row[0], row[2]) for row in expected_daily]
    assert _cold_marts(settings.pg_dsn) == {"daily": expected_daily,
                                            "sessions": expected_sessions}

    # The backfill DAG rebuilds what was lost, exactly.
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute("delete from mart_daily_traffic")
        conn.execute("delete from mart_session_analysis")
    _airflow(["dags", "test", "tripflow_backfill", "-c",
              '{"from": "2016-03-01", "to": "2016-03-02"}'], airflow_env)
    assert _cold_marts(settings.pg_dsn) == {"daily": expected_daily,
                                            "sessions": expected_sessions}


def test_no_secret_in_airflow_logs(settings, airflow_env) -> None:
    """Task logs and rendered templates never show the database password."""
    output = _airflow(["dags", "test", "tripflow_backfill", "-c",
                       '{"from": "2016-03-01", "to": "2016-03-01"}'], airflow_env)
    password = settings.pg_dsn.split("://", 1)[1].split("@")[0].split(":", 1)[1]
    logs = "".join(p.read_text(errors="replace")
                   for p in Path(airflow_env["AIRFLOW_HOME"], "logs").rglob("*") if p.is_file())
    assert password not in output
    assert password not in logs
