"""Broker faults on the session's 3-broker Apache Kafka cluster (replication factor 3,
min.insync.replicas 2): a partition leader SIGKILLed in the middle of a produce, of the
hot path and of bronze (all three running), and restarted later; one broker stopped
for 30 s while all three steps run. Every record lands exactly once in the topic, bronze,
silver and the cold marts; the hot marts are exact (independent reference models)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.kits import batchkit
from tests.kits import hot_reference as ref
from tests.kits.hot_checks import assert_marts_equal
from tests.kits.hot_workers import Worker, kill_leftovers, stored_records
from tripflow import lake, services
from tripflow.records.generate import generate
from tripflow.services import kafka
from tripflow.settings import Settings

PARTITIONS = 6
# A wide horizon: generated late lines are never "late for hot", whenever they are read.
STREAM = ["--batch-ms", "200", "--batch-records", "2000", "--horizon-hours", "240"]
# The produce is paced: its two days of log (12 k lines) take about 20 s whatever the
# machine's speed, so a fault injected once records land is injected mid-produce. (In
# bulk the whole produce can end within the probe's half second: it did, in CI.)
PRODUCE = ["--mode", "replay", "--speed", str(2 * 86_400 // 20), "--servers", "2"]
MARTS = ["mart_session_analysis", "mart_daily_traffic", "mart_clinical_areas",
         "mart_popular_documents", "mart_hourly_traffic"]


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture
def cluster(settings: Settings, kafka_cluster: Settings,
            tripflow_env: dict[str, str]) -> Iterator[tuple[Settings, dict[str, str]]]:
    """This test's settings and `tripflow` environment on the 3-broker cluster; every
    broker running again afterwards, for the next test."""
    on = settings.model_copy(update={"kafka_bootstrap": kafka_cluster.kafka_bootstrap})
    env = {**tripflow_env, "TRIPFLOW_KAFKA_BOOTSTRAP": str(kafka_cluster.kafka_bootstrap),
           "TRIPFLOW_TOPIC_PARTITIONS": str(PARTITIONS)}
    yield on, env
    paths = services.kafka_paths(kafka_cluster)
    for node in kafka.nodes(paths):
        kafka.start_node(paths, node.id)


def _dataset(folder: Path) -> list[bytes]:
    generate(folder, start=dt.date(2016, 2, 1), days=2, seed=11, sessions_per_day=1500,
             dup_rate=0.03, late_rate=0.03, bad_rate=0.02, bots=2)
    return batchkit.file_lines(batchkit.day_files(folder))


def _leader(bootstrap: str, topic: str, partition: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader


def _high_watermarks(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-probe"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(PARTITIONS))
    except Exception:  # the topic is not there yet
        return 0
    finally:
        consumer.close()


def _topic(bootstrap: str, topic: str) -> list[batchkit.Sent]:
    """Every record of the topic, read back from offset 0 of each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-reader",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[batchkit.Sent] = []
    ended: set[int] = set()
    while len(ended) < PARTITIONS:
        msg = consumer.poll(15)
        assert msg is not None, "the topic did not end within 15 s"
        if msg.error():
            ended.add(msg.partition())
        else:
            found.append(batchkit.Sent(msg.value(), msg.partition(), msg.offset(),
                                       msg.timestamp()[1]))
    consumer.close()
    return found


def _bronze_count(settings: Settings) -> int:
    table = lake.open_table(settings, lake.BRONZE)
    return 0 if table is None else table.to_pyarrow_table(columns=["offset"]).num_rows


def _wait(what: str, done: Callable[[], bool], timeout: float,
          alive: Callable[[], list[str]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        dead = alive()
        assert not dead, f"{what}: a step died:\n" + "\n".join(dead)
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s")


class Steps:
    """`tripflow produce` (paced), `tripflow stream` and `tripflow bronze`, all running."""

    def __init__(self, env: dict[str, str], data: Path, tmp: Path) -> None:
        self.logs = tmp
        self.producer = subprocess.Popen(
            [sys.executable, "-m", "tripflow", "produce", str(data), *PRODUCE],
            env=env, stdout=(tmp / "produce.log").open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        self.stream = Worker(env, STREAM, tmp / "stream.log")
        self.bronze = subprocess.Popen(
            [sys.executable, "-m", "tripflow", "bronze", "--batch-rows", "3000"], env=env,
            stdout=(tmp / "bronze.log").open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)

    def failed(self) -> list[str]:
        dead = []
        if self.producer.poll() not in (None, 0):
            dead.append((self.logs / "produce.log").read_text()[-3000:])
        if not self.stream.alive():
            dead.append(self.stream.text()[-3000:])
        if self.bronze.poll() is not None:
            dead.append((self.logs / "bronze.log").read_text()[-3000:])
        return dead

    def finish(self, settings: Settings, records: int) -> None:
        assert self.producer.wait(timeout=300) == 0, (self.logs / "produce.log").read_text()
        assert settings.pg_dsn
        dsn = settings.pg_dsn
        _wait("the hot path read every record", lambda: stored_records(dsn) >= records, 300,
              self.failed)
        _wait("bronze copied every record", lambda: _bronze_count(settings) >= records, 300,
              self.failed)
        assert self.stream.stop() == 0, self.stream.text()[-3000:]
        self.bronze.terminate()
        assert self.bronze.wait(timeout=60) == 0, (self.logs / "bronze.log").read_text()


def _check_everything(settings: Settings, env: dict[str, str], lines: list[bytes]) -> None:
    assert settings.kafka_bootstrap and settings.pg_dsn
    # The topic: every line exactly once (the idempotent producer retried through the fault).
    sent = _topic(settings.kafka_bootstrap, settings.topic)
    assert sorted(s.line for s in sent) == sorted(lines)
    # Hot marts: exact, against the reference model (before `marts` reconciles minutes).
    clicks, bad = ref.distinct_clicks(lines, int(time.time() * 1000))
    got = assert_marts_equal(settings.pg_dsn, list(clicks.values()))
    records_seen, new, duplicates, late, quarantined = got["state"]  # type: ignore[misc]
    assert (records_seen, new, duplicates, late, quarantined) == \
        (len(lines), len(clicks), len(lines) - len(clicks) - bad, 0, bad)
    # One quarantine row per distinct bad line (a bad line sent twice is seen twice).
    assert got["quarantine_rows"] == len({s.line for s in sent if batchkit.read_click(s) is None})
    # Bronze: each (partition, offset) once, with the topic's bytes.
    table = lake.open_table(settings, lake.BRONZE)
    assert table is not None
    rows = table.to_pyarrow_table(columns=["partition", "offset", "value"]).to_pylist()
    assert sorted((r["partition"], r["offset"], r["value"]) for r in rows) == \
        sorted((s.partition, s.offset, s.line) for s in sent)
    # Silver and the cold marts, computed independently from the topic's records.
    for step in (["silver", "--changed"], ["marts", "--changed"]):
        result = subprocess.run([sys.executable, "-m", "tripflow", *step], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    truth = batchkit.truth(sent)
    silver = lake.open_table(settings, lake.SILVER)
    assert silver is not None
    got = silver.to_pyarrow_table(columns=["session_id", "document_id", "event_ts",
                                           "kafka_partition", "kafka_offset"])
    ms = pc.cast(pc.cast(got.column("event_ts"), pa.timestamp("ms", tz="UTC")), pa.int64())
    silver_rows = list(zip(got.column("session_id").to_pylist(),
                           got.column("document_id").to_pylist(), ms.to_pylist(),
                           got.column("kafka_partition").to_pylist(),
                           got.column("kafka_offset").to_pylist(), strict=True))
    assert sorted(silver_rows) == sorted(
        (c.session_id, c.document_id, c.ms, c.partition, c.offset) for c in truth.clicks)
    want = batchkit.expected_marts(truth.clicks)
    with psycopg.connect(settings.pg_dsn) as conn:
        for mart in [*MARTS, "traffic_minute"]:
            assert batchkit.pg_mart_rows(conn, mart) == want[mart], mart


def test_partition_leader_sigkilled_mid_produce_stream_and_bronze(
        cluster: tuple[Settings, dict[str, str]], kafka_cluster: Settings,
        tmp_path: Path) -> None:
    settings, env = cluster
    assert settings.kafka_bootstrap
    data = tmp_path / "gen"
    lines = _dataset(data)
    paths = services.kafka_paths(kafka_cluster)
    steps = Steps(env, data, tmp_path)
    # Mid-produce: once records are landing, SIGKILL the leader of partition 0.
    _wait("first records", lambda: _high_watermarks(settings.kafka_bootstrap or "",
                                                     settings.topic) > 500, 120, steps.failed)
    victim = _leader(settings.kafka_bootstrap, settings.topic, 0)
    assert steps.producer.poll() is None, "the produce ended before the fault"
    assert kafka.stop_node(paths, victim, kill=True)
    time.sleep(8)  # the cluster elects new leaders; clients find them
    assert not steps.failed(), steps.failed()
    kafka.start_node(paths, victim)
    steps.finish(settings, len(lines))
    _check_everything(settings, env, lines)
    assert "delivered" in (tmp_path / "produce.log").read_text()


def test_one_broker_stopped_for_30_s_while_all_steps_run(
        cluster: tuple[Settings, dict[str, str]], kafka_cluster: Settings,
        tmp_path: Path) -> None:
    settings, env = cluster
    assert settings.kafka_bootstrap
    data = tmp_path / "gen"
    lines = _dataset(data)
    paths = services.kafka_paths(kafka_cluster)
    steps = Steps(env, data, tmp_path)
    _wait("first records", lambda: _high_watermarks(settings.kafka_bootstrap or "",
                                                     settings.topic) > 500, 120, steps.failed)
    victim = _leader(settings.kafka_bootstrap, settings.topic, 1)
    assert kafka.stop_node(paths, victim)  # SIGTERM: a controlled shutdown
    stopped = time.monotonic()
    while time.monotonic() - stopped < 30:
        assert not steps.failed(), steps.failed()
        time.sleep(1)
    kafka.start_node(paths, victim)
    steps.finish(settings, len(lines))
    _check_everything(settings, env, lines)
