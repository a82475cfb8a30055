"""The hot path under failure, with real processes: SIGKILLs at random moments while data
is being produced, two workers in one consumer group, PostgreSQL stopped and started, the
broker restarted with an empty log. Every time the marts end equal to the reference."""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.kits import hot_reference as ref
from tests.kits.hot_checks import assert_marts_equal
from tests.kits.hot_data import create_topic, dataset, produce
from tests.kits.hot_workers import Worker, kill_leftovers, stored_records, wait_for_records
from tripflow import services
from tripflow.services import Endpoints, broker, postgres
from tripflow.settings import Settings

# Small batches: many transactions, so random kills land inside them. A wide horizon: the
# generated late lines (up to 3 days late) are never "late for hot" whatever the timing,
# so the expected marts do not depend on when each record happened to be read.
FAST = ["--batch-ms", "100", "--batch-records", "300", "--horizon-hours", "240"]


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    yield
    kill_leftovers()


def expected(lines: list[bytes]) -> tuple[list[ref.Click], int]:
    clicks, bad = ref.distinct_clicks(lines, int(time.time() * 1000))
    return list(clicks.values()), bad


def producing(bootstrap: str, topic: str, lines: list[bytes], seconds: float) -> threading.Thread:
    thread = threading.Thread(target=produce, args=(bootstrap, topic, lines),
                              kwargs={"rate": len(lines) / seconds}, daemon=True)
    thread.start()
    return thread


def test_sigkill_at_random_moments(settings: Settings, tripflow_env: dict[str, str],
                                   tripflow_cli, tmp_path: Path) -> None:
    """16 SIGKILLs of the worker while the data is produced; a final run to idle."""
    lines = dataset(tmp_path / "gen", days=2, sessions_per_day=250, bots=3)
    clicks, bad = expected(lines)
    assert settings.kafka_bootstrap and settings.pg_dsn
    create_topic(settings.kafka_bootstrap, settings.topic, 4)
    producer = producing(settings.kafka_bootstrap, settings.topic, lines, seconds=25)
    rng = random.Random(2024)
    log = tmp_path / "workers.log"
    kills = 0
    while kills < 16:
        worker = Worker(tripflow_env, ["--partitions", "all", *FAST], log)
        time.sleep(rng.uniform(1.0, 3.5))  # start-up, assignment, mid-batch, mid-commit…
        assert worker.alive(), worker.text()[-3000:]
        worker.kill()
        kills += 1
    producer.join(timeout=120)
    # A kill may land during start-up (a valid moment too, more likely on a loaded
    # machine); most must hit a running worker, or the test would prove little.
    started = log.read_text().count("stream worker started")
    assert kills // 2 <= started <= kills
    assert stored_records(settings.pg_dsn) > 0  # the killed workers made progress
    result = tripflow_cli("stream", "--until-idle", "3", "--partitions", "all", *FAST,
                          env=tripflow_env, timeout=300)
    assert "records in" in result.stdout
    assert_marts_equal(settings.pg_dsn, clicks, records=len(lines), bad=bad)


def test_two_workers_in_one_group_killed_and_restarted(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli, tmp_path: Path) -> None:
    """Two workers share the partitions (group tripflow-hot); 6 SIGKILLs among them."""
    lines = dataset(tmp_path / "gen", start=date(2016, 4, 1), days=1, sessions_per_day=500,
                    bots=3, seed=11)
    clicks, bad = expected(lines)
    assert settings.kafka_bootstrap and settings.pg_dsn
    create_topic(settings.kafka_bootstrap, settings.topic, 4)
    producer = producing(settings.kafka_bootstrap, settings.topic, lines, seconds=30)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [Worker(tripflow_env, FAST, log) for log in logs]
    rng = random.Random(7)
    for _kill in range(6):
        time.sleep(rng.uniform(3.0, 7.0))
        victim = rng.randrange(2)
        assert workers[victim].alive(), workers[victim].text()[-3000:]
        workers[victim].kill()
        workers[victim] = Worker(tripflow_env, FAST, logs[victim])
    producer.join(timeout=120)
    wait_for_records(settings.pg_dsn, len(lines), 120, workers)
    assert [w.stop() for w in workers] == [0, 0]
    # both took part: each was assigned partitions at some point
    for log in logs:
        assert any(line.split("assigned partitions of", 1)[1].split(":", 1)[1].strip() != "none"
                   for line in log.read_text().splitlines() if "assigned partitions of" in line)
    assert_marts_equal(settings.pg_dsn, clicks, records=len(lines), bad=bad)


@pytest.fixture
def own_home() -> Iterator[Path]:
    """A TRIPFLOW_HOME for services this test may stop (outside pytest's temp folder, which
    pytest may make unreadable to the PostgreSQL system user)."""
    home = Path(tempfile.mkdtemp(prefix="tripflow-hot-"))
    yield home
    services.down(Settings(home=home))
    shutil.rmtree(home, ignore_errors=True)


def test_postgres_stopped_and_started_mid_run(endpoints: Endpoints, own_home: Path,
                                              tmp_path: Path, test_id: str) -> None:
    settings = Settings(home=own_home, kafka_bootstrap=endpoints.kafka_bootstrap,
                        topic=f"pg_restart_{test_id}")
    services.up(settings)  # a PostgreSQL of our own; the session's broker
    dsn = services.pg_dsn(settings)
    env = _env(settings, pg_dsn=dsn)
    lines = dataset(tmp_path / "gen", days=1, sessions_per_day=400, bots=2)
    clicks, bad = expected(lines)
    create_topic(endpoints.kafka_bootstrap, settings.topic, 3)
    producer = producing(endpoints.kafka_bootstrap, settings.topic, lines, seconds=12)
    worker = Worker(env, ["--partitions", "all", *FAST], tmp_path / "worker.log")
    time.sleep(5)
    paths = postgres.PgPaths(own_home)
    assert postgres.stop(paths)
    time.sleep(4)  # the worker retries with backoff meanwhile
    assert worker.alive(), worker.text()[-3000:]
    postgres.start(paths)
    producer.join(timeout=120)
    wait_for_records(dsn, len(lines), 120, [worker])
    assert worker.stop() == 0
    text = worker.text()
    assert "PostgreSQL unreachable" in text and "PostgreSQL reachable again" in text, text[-3000:]
    assert_marts_equal(dsn, clicks, records=len(lines), bad=bad)


def test_broker_restarted_with_an_empty_log(pg_dsn: str, own_home: Path, tmp_path: Path,
                                            test_id: str) -> None:
    """The embedded broker forgets everything on restart: the worker notices that its
    stored offsets lie beyond the new log's end, says so, and reads the new log from its
    start. Meanwhile (broker down) it logs and retries, and does not crash."""
    settings = Settings(home=own_home, pg_dsn=pg_dsn, topic=f"broker_restart_{test_id}",
                        broker="tansu")  # the in-memory broker: a restart empties its log
    services.up(settings)  # a broker of our own; the test's database
    bootstrap = services.kafka_bootstrap(settings)
    env = _env(settings, kafka_bootstrap=bootstrap)
    first = dataset(tmp_path / "a", days=1, sessions_per_day=300, bots=1)
    second = dataset(tmp_path / "b", start=date(2016, 3, 2), days=1, sessions_per_day=60,
                     bots=0, seed=9)
    create_topic(bootstrap, settings.topic, 3)
    produce(bootstrap, settings.topic, first)
    worker = Worker(env, FAST, tmp_path / "worker.log")
    wait_for_records(pg_dsn, len(first), 90, [worker])

    paths = broker.BrokerPaths(own_home)
    assert broker.stop(paths)
    time.sleep(4)
    assert worker.alive(), worker.text()[-3000:]
    broker.start(paths)  # same address, empty log: the topic is gone too
    create_topic(bootstrap, settings.topic, 3)
    produce(bootstrap, settings.topic, second)  # fewer records than before per partition
    wait_for_records(pg_dsn, len(first) + len(second), 120, [worker])
    assert worker.stop() == 0
    text = worker.text()
    assert "broker unreachable" in text, text[-3000:]
    assert "beyond the log end" in text and "Reading partition" in text, text[-3000:]
    clicks, bad = expected(first + second)
    # every bad record has its row, though the new log reuses the old one's offsets
    assert_marts_equal(pg_dsn, clicks, records=len(first) + len(second), bad=bad)


def _env(settings: Settings, **overrides: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env.update({"TRIPFLOW_HOME": str(settings.home), "TRIPFLOW_TOPIC": settings.topic})
    if settings.pg_dsn:
        env["TRIPFLOW_PG_DSN"] = settings.pg_dsn
    if settings.kafka_bootstrap:
        env["TRIPFLOW_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env.update({f"TRIPFLOW_{k.upper()}": v for k, v in overrides.items()})
    return env
