"""Test base: one embedded PostgreSQL and one broker per test session; per test its own
database, topic and lake folder, so tests never see each other's data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tripflow import db, services
from tripflow.services import Endpoints
from tripflow.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE_FILE = SHARED / "data" / "tripclick_sample_2016-01-01.jsonl"


@pytest.fixture(scope="session")
def services_home() -> Iterator[Path]:
    """TRIPFLOW_HOME of the session's embedded services, stopped and removed at the end.

    Outside pytest's own temp folder: pytest resets that folder to mode 0700 when another
    session starts, which would lock out the PostgreSQL system user mid-run.
    """
    home = Path(tempfile.mkdtemp(prefix="tripflow-test-"))
    yield home
    services.down(Settings(home=home))
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoints(services_home: Path) -> Endpoints:
    settings = Settings(home=services_home)
    services.up(settings)
    return services.endpoints(settings)


def _database_dsn(server_dsn: str, name: str) -> str:
    base, _, _db = server_dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def pg_dsn(endpoints: Endpoints, test_id: str) -> Iterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    name = f"t_{test_id}"
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = _database_dsn(endpoints.pg_dsn, name)
    db.migrate(dsn)
    yield dsn
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def topic(test_id: str) -> str:
    return f"tripclick_raw_logs_{test_id}"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, endpoints: Endpoints, pg_dsn: str, topic: str, lake: Path) -> Settings:
    """Settings of an isolated tripflow: own home, database, topic and lake."""
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, pg_dsn=pg_dsn, kafka_bootstrap=endpoints.kafka_bootstrap,
                    topic=topic, lake_uri=str(lake))


@pytest.fixture
def tripflow_env(settings: Settings) -> dict[str, str]:
    """Environment for running the `tripflow` command as a real subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env.update({
        "TRIPFLOW_HOME": str(settings.home),
        "TRIPFLOW_PG_DSN": settings.pg_dsn or "",
        "TRIPFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "TRIPFLOW_TOPIC": settings.topic,
        "TRIPFLOW_LAKE_URI": settings.lake,
    })
    return env


@pytest.fixture
def tripflow_cli():
    """Runs the real `tripflow` command as a subprocess: tripflow_cli(*args, env=...)."""
    return run_tripflow


def tripflow_command() -> list[str]:
    """The installed console script, else the module (for PYTHONPATH=src runs)."""
    script = shutil.which("tripflow", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "tripflow"]


def run_tripflow(*args: str, env: dict[str, str], timeout: float = 300,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*tripflow_command(), *args], env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"tripflow {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result
