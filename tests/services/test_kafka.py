"""The embedded Apache Kafka broker (`tripflow services up --broker kafka`): records and
committed group offsets survive a SIGKILL and a restart; `down`/`status` handle it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tripflow.services import kafka
from tripflow.services.procs import pid_alive

TOPIC = "restart_test"
RECORDS = 3000
PARTITIONS = 3


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env["TRIPFLOW_HOME"] = str(home)
    env.update(extra)
    return env


@pytest.fixture
def home(tripflow_cli):
    home = Path(tempfile.mkdtemp(prefix="tripflow-kafka-"))
    yield home
    tripflow_cli("services", "down", env=_env(home), check=False)
    shutil.rmtree(home, ignore_errors=True)


def _status(tripflow_cli, env: dict[str, str]) -> tuple[int, dict]:
    result = tripflow_cli("services", "status", "--json", env=env, check=False)
    return result.returncode, json.loads(result.stdout)


def _produce(bootstrap: str) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """RECORDS keyed records; returns (partition, offset) -> (key, value) as delivered."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=30)
    delivered: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        delivered[(msg.partition(), msg.offset())] = (msg.key(), msg.value())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "on_delivery": on_delivery})
    for i in range(RECORDS):
        producer.produce(TOPIC, key=f"s{i % 97}".encode(), value=f"record {i}".encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(delivered) == RECORDS
    return delivered


def _consume_all(bootstrap: str) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    got: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    ended: set[int] = set()
    while len(ended) < PARTITIONS:
        msg = consumer.poll(10)
        assert msg is not None, "no record and no partition end within 10 s"
        if msg.error():
            ended.add(msg.partition())
            continue
        got[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
    consumer.close()
    return got


def _committed(bootstrap: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tripflow-hot"})
    found = consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)],
                               timeout=30)
    consumer.close()
    return {tp.partition: tp.offset for tp in found}


def test_records_and_group_offsets_survive_kill_9_and_restart(home: Path, tripflow_cli) -> None:
    env = _env(home)
    up = tripflow_cli("services", "up", "--broker", "kafka", env=env)
    assert "started: postgresql, broker" in up.stdout
    assert "warning" not in up.stdout  # Kafka keeps records: nothing to warn about
    code, status = _status(tripflow_cli, env)
    assert (code, status["broker"]) == (0, "up")
    bootstrap = status["kafka_bootstrap"]
    assert bootstrap == kafka.bootstrap(kafka.KafkaPaths(home))
    sent = _produce(bootstrap)
    # A group's committed offsets (what bronze's --commit-hint and any lag monitor read).
    commits = {0: 17, 1: 250, 2: 999}
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tripflow-hot"})
    committer.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in commits.items()],
                     asynchronous=False)
    committer.close()

    pid = kafka.pid(kafka.KafkaPaths(home), 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    code, down = _status(tripflow_cli, env)
    assert (code, down["broker"]) == (1, "down")

    again = tripflow_cli("services", "up", env=env)  # the home's kind: Kafka again
    assert "started: broker" in again.stdout
    assert _status(tripflow_cli, env)[1]["kafka_bootstrap"] == bootstrap  # same address
    assert _consume_all(bootstrap) == sent  # every record, same partition and offset
    assert _committed(bootstrap) == commits

    # Its log is under the home; `down` stops it (and only it).
    assert (home / "logs" / "kafka-1.log").stat().st_size > 0
    new_pid = kafka.pid(kafka.KafkaPaths(home), 1)
    assert "stopped: kafka, postgresql" in tripflow_cli("services", "down", env=env).stdout
    assert not pid_alive(new_pid, "kafka.Kafka")


def test_cluster_of_three_status_and_private_sasl_password(home: Path, tripflow_cli) -> None:
    env = _env(home, TRIPFLOW_BROKER="kafka", TRIPFLOW_BROKERS="3")
    tripflow_cli("services", "up", env=env)
    text = " ".join(tripflow_cli("services", "status", env=env).stdout.split())
    assert "Apache Kafka" in text and "3/3" in text
    paths = kafka.KafkaPaths(home)
    assert [n.id for n in kafka.nodes(paths)] == [1, 2, 3]
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap(paths)}).list_topics(timeout=30)
    assert sorted(metadata.brokers) == [1, 2, 3]
    assert stat.S_IMODE(paths.password_file.stat().st_mode) == 0o600
    # The generated SCRAM password is on no command line and in no log.
    password = kafka.sasl_password(paths)
    assert password
    for node in kafka.nodes(paths):
        proc_cmdline = Path(f"/proc/{kafka.pid(paths, node.id)}/cmdline").read_bytes()
        assert password.encode() not in proc_cmdline
        assert password not in paths.log_file(node.id).read_text()
    # Asking for another size of an existing cluster is refused with what to do.
    result = tripflow_cli("services", "up", "--brokers", "1", env=env, check=False)
    assert result.returncode == 1
    assert "has 3 broker(s), not 1" in " ".join(result.stderr.split())


def test_without_java_the_default_is_tansu_with_a_warning(home: Path, tripflow_cli) -> None:
    env = _env(home, JAVA_HOME=str(home / "no-java"))  # JAVA_HOME set: only its java counts
    result = tripflow_cli("services", "up", env=env)
    text = " ".join(result.stdout.split())
    assert "embedded tansu" in text
    assert "warning: the embedded broker is tansu" in text
    assert "a broker restart loses every record not yet in bronze" in text
