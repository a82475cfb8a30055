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


# Kafka-facing tests: each test here taking the `kafka_bootstrap` fixture (through
# `settings` too) runs against tansu, and those of KAFKA3 also against a 3-broker Apache
# Kafka cluster (replication factor 3, min.insync.replicas 2): a representative subset,
# to keep the added time small (TRIPFLOW_TEST_KAFKA3=all runs every one there). Other
# tests use the session's default broker.
BROKER_MATRIX = (
    "tests/ingestion/test_produce.py",
    "tests/processing/test_bronze.py",
    "tests/processing/test_stream.py",
    "tests/processing/test_stream_failures.py",
    "tests/processing/test_batch_kill.py",
    "tests/messaging/",
)
KAFKA3 = (
    "tests/ingestion/test_produce.py::test_bulk_sends_every_line_exactly_once_with_keys",
    "tests/ingestion/test_produce.py::test_three_servers_split_sessions",
    "tests/ingestion/test_produce.py::test_stop_mid_run_reports_exactly_what_was_delivered",
    "tests/ingestion/test_produce.py::test_topic_is_created_with_partitions",
    "tests/processing/test_bronze.py::test_exactly_once_across_runs",
    "tests/processing/test_bronze.py::test_two_loaders_in_the_group",
    "tests/processing/test_stream.py::",
    "tests/processing/test_stream_failures.py::test_two_workers_in_one_group",
    "tests/processing/test_batch_kill.py::test_bronze_survives_kills",
    "tests/messaging/test_broker_roundtrip.py::",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    nodeid = metafunc.definition.nodeid
    if "broker_kind" in metafunc.fixturenames and nodeid.startswith(BROKER_MATRIX):
        kinds = ["tansu"]
        if os.environ.get("TRIPFLOW_TEST_KAFKA3") == "all" or nodeid.startswith(KAFKA3):
            kinds.append("kafka3")
        metafunc.parametrize("broker_kind", kinds, indirect=True)


def _own_broker(home: Path, **kind: object) -> Iterator[Settings]:
    settings = Settings(home=home, **kind)
    services.up(settings, pg=False)
    yield settings.model_copy(update={"kafka_bootstrap": services.kafka_bootstrap(settings)})
    services.down(settings)


@pytest.fixture(scope="session")
def tansu_broker(services_home: Path) -> Iterator[Settings]:
    """The session's tansu (in memory), for the Kafka-facing tests."""
    yield from _own_broker(services_home / "tansu", broker="tansu")


@pytest.fixture(scope="session")
def kafka_cluster(services_home: Path) -> Iterator[Settings]:
    """The session's 3-broker Apache Kafka cluster (KRaft, on disk), started on first use.
    Its home's `services.kafka_paths` reach each broker (the fault tests kill them)."""
    yield from _own_broker(services_home / "kafka3", broker="kafka", brokers=3)


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """"tansu" or "kafka3" in the Kafka-facing tests, else "default"."""
    return getattr(request, "param", "default")


@pytest.fixture
def kafka_bootstrap(broker_kind: str, endpoints: Endpoints,
                    request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of this test's broker (see BROKER_MATRIX)."""
    if broker_kind == "tansu":
        return request.getfixturevalue("tansu_broker").kafka_bootstrap
    if broker_kind == "kafka3":
        return request.getfixturevalue("kafka_cluster").kafka_bootstrap
    return endpoints.kafka_bootstrap


def _database_dsn(server_dsn: str, name: str) -> str:
    base, _, _db = server_dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def blank_pg_dsn(endpoints: Endpoints, test_id: str) -> Iterator[str]:
    """A fresh, empty database for this test (not migrated); dropped afterwards."""
    name = f"t_{test_id}"
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield _database_dsn(endpoints.pg_dsn, name)
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def pg_dsn(blank_pg_dsn: str) -> str:
    """A fresh, migrated database for this test; dropped afterwards."""
    db.migrate(blank_pg_dsn)
    return blank_pg_dsn


@pytest.fixture
def topic(test_id: str) -> str:
    return f"tripclick_raw_logs_{test_id}"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic: str,
             lake: Path) -> Settings:
    """Settings of an isolated tripflow: own home, database, topic and lake."""
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, pg_dsn=pg_dsn, kafka_bootstrap=kafka_bootstrap,
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
