"""Embedded Apache Kafka: 1..N brokers in KRaft mode on 127.0.0.1, from the cached jars.

Every node is a combined controller+broker (`process.roles=broker,controller`) with a
static quorum of all nodes, its data under `$TRIPFLOW_HOME/kafka/node-<id>` and its log in
`$TRIPFLOW_HOME/logs/kafka-<id>.log`. The records are on disk: a broker killed and started
again has every record at the same offset, and the group offsets too. Ports are chosen on
first start and kept (the quorum's addresses are part of the cluster's identity).

Each node listens on three ports: BROKER (PLAINTEXT: clients and replication), CONTROLLER
(the KRaft quorum) and SASL (SASL_PLAINTEXT with SCRAM-SHA-512, for the user created at
format time, whose password is generated into `$TRIPFLOW_HOME/kafka_password`).
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tripflow.services.procs import (
    pid_alive,
    port_free,
    read_json,
    write_json,
    write_secret,
)

SASL_USER = "tripflow"
SASL_MECHANISM = "SCRAM-SHA-512"
MIN_JAVA = 17

LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Per-segment and per-request chatter; warnings still show.
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


class KafkaError(RuntimeError):
    """The Kafka brokers could not be started; the message says what to do."""


@dataclass(frozen=True)
class KafkaPaths:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "kafka"

    @property
    def state_file(self) -> Path:
        return self.home / "kafka.json"

    @property
    def password_file(self) -> Path:
        return self.home / "kafka_password"

    def node_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def config_file(self, node: int) -> Path:
        return self.node_dir(node) / "server.properties"

    def data_dir(self, node: int) -> Path:
        return self.node_dir(node) / "data"

    def log_file(self, node: int) -> Path:
        return self.home / "logs" / f"kafka-{node}.log"


@dataclass(frozen=True)
class Node:
    id: int
    port: int  # BROKER listener (PLAINTEXT)
    controller_port: int
    sasl_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# -- Java ---------------------------------------------------------------------------------

def java_binary() -> str | None:
    """JAVA_HOME's java when JAVA_HOME is set (none there: no Java), else PATH's."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        return str(java) if java.exists() else None
    return shutil.which("java")


@cache
def java_version(java: str) -> int | None:
    """The major version of `java` (17 for "17.0.15"), None when it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_ok() -> bool:
    """True when a Java ≥ 17 is installed (what Kafka 4 needs)."""
    java = java_binary()
    version = java_version(java) if java else None
    return version is not None and version >= MIN_JAVA


def jars_available() -> bool:
    """True when the Kafka jars are cached, or Maven is there to fetch them."""
    from tripflow.services import jars

    return (jars.folder("kafka") / ".complete").exists() or shutil.which("mvn") is not None


def _java() -> str:
    java = java_binary()
    version = java_version(java) if java else None
    if java is None or version is None or version < MIN_JAVA:
        found = f"Java {version} at {java}" if version else "no Java"
        raise KafkaError(f"Apache Kafka needs Java ≥ {MIN_JAVA} ({found}): install it "
                         "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME, or use "
                         "the in-memory broker (TRIPFLOW_BROKER=tansu)")
    return java


def _classpath() -> str:
    from tripflow.services import jars

    try:
        return jars.classpath("kafka")
    except jars.JarsError as err:
        raise KafkaError(str(err)) from err


# -- state --------------------------------------------------------------------------------

def nodes(paths: KafkaPaths) -> list[Node]:
    """The cluster's nodes as first started (empty before that)."""
    state = read_json(paths.state_file) or {}
    return [Node(n["id"], n["port"], n["controller_port"], n["sasl_port"])
            for n in state.get("nodes", [])]


def formatted(paths: KafkaPaths) -> bool:
    return bool(nodes(paths)) and all(
        (paths.data_dir(n.id) / "meta.properties").exists() for n in nodes(paths))


def bootstrap(paths: KafkaPaths) -> str | None:
    found = nodes(paths)
    return ",".join(n.address for n in found) if found else None


def sasl_bootstrap(paths: KafkaPaths) -> str | None:
    found = nodes(paths)
    return ",".join(f"127.0.0.1:{n.sasl_port}" for n in found) if found else None


def sasl_password(paths: KafkaPaths) -> str | None:
    try:
        return paths.password_file.read_text().strip()
    except OSError:
        return None


def _pids(paths: KafkaPaths) -> dict[int, int]:
    state = read_json(paths.state_file) or {}
    return {int(k): v for k, v in state.get("pids", {}).items()}


def _set_pid(paths: KafkaPaths, node: int, pid: int | None) -> None:
    state = read_json(paths.state_file) or {}
    pids = state.setdefault("pids", {})
    if pid is None:
        pids.pop(str(node), None)
    else:
        pids[str(node)] = pid
    write_json(paths.state_file, state)


def pid(paths: KafkaPaths, node: int) -> int | None:
    """The PID of node `node` when it runs (the PID file alone is not trusted)."""
    found = _pids(paths).get(node)
    return found if pid_alive(found, str(paths.config_file(node))) else None


def running(paths: KafkaPaths) -> bool:
    return any(pid(paths, n.id) for n in nodes(paths))


def answers(address: str, brokers: int = 1, timeout: float = 3.0) -> bool:
    """True when the cluster at `address` returns metadata naming `brokers` brokers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
    try:
        return len(admin.list_topics(timeout=timeout).brokers) >= brokers
    except Exception:
        return False


def is_up(paths: KafkaPaths) -> bool:
    found = nodes(paths)
    return bool(found) and all(pid(paths, n.id) for n in found) and \
        answers(bootstrap(paths) or "", len(found))


# -- configuration ------------------------------------------------------------------------

def _heap(count: int) -> str:
    return "512m" if count == 1 else "384m"


def _properties(paths: KafkaPaths, node: Node, cluster: list[Node]) -> str:
    count = len(cluster)
    replicas = min(3, count)
    voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in cluster)
    settings: dict[str, Any] = {
        "process.roles": "broker,controller",
        "node.id": node.id,
        "controller.quorum.voters": voters,
        "listeners": f"BROKER://127.0.0.1:{node.port},SASL://127.0.0.1:{node.sasl_port},"
                     f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"BROKER://127.0.0.1:{node.port},"
                                f"SASL://127.0.0.1:{node.sasl_port}",
        "listener.security.protocol.map":
            "BROKER:PLAINTEXT,SASL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "BROKER",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "listener.name.sasl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "log.dirs": paths.data_dir(node.id),
        # Internal topics replicated like tripflow's own (min(3, brokers), 2 in sync).
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 6,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min(2, replicas),
        "transaction.state.log.num.partitions": 6,
        "default.replication.factor": replicas,
        "min.insync.replicas": min(2, replicas),
        "num.partitions": 1,
        "group.initial.rebalance.delay.ms": 0,
        "unclean.leader.election.enable": "false",
        "log.segment.bytes": 64 * 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 2,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _write_configs(paths: KafkaPaths, cluster: list[Node]) -> None:
    for node in cluster:
        paths.data_dir(node.id).mkdir(parents=True, exist_ok=True)
        paths.config_file(node.id).write_text(_properties(paths, node, cluster))
        (paths.node_dir(node.id) / "log4j2.properties").write_text(
            LOG4J2.format(log=paths.log_file(node.id)))


def _plan(count: int, first_port: int) -> list[Node]:
    """Ports for a new cluster: consecutive from `first_port` when free, else free ones
    below the ephemeral range (the first node's outgoing connections, made while the
    others start, take ephemeral ports and could take a port planned for another node)."""
    wanted = [first_port + i for i in range(3 * count)] if first_port else []
    if not wanted or not all(port_free(p) for p in wanted):
        rng = random.SystemRandom()
        chosen: set[int] = set()
        while len(chosen) < 3 * count:
            port = rng.randrange(*_PORT_RANGE)
            if port_free(port):
                chosen.add(port)
        wanted = sorted(chosen)
    return [Node(i + 1, wanted[3 * i], wanted[3 * i + 1], wanted[3 * i + 2])
            for i in range(count)]


def _port_range() -> tuple[int, int]:
    """Ports to choose from: 20000 up to the start of Linux's ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (20000, low) if low > 21000 else (10000, 20000)


_PORT_RANGE = _port_range()


def _format(paths: KafkaPaths, java: str, classpath: str, cluster: list[Node]) -> None:
    """`kafka-storage format` every node, creating the SCRAM user on the way."""
    if not paths.password_file.exists():
        write_secret(paths.password_file, secrets.token_urlsafe(24))
    password = sasl_password(paths)
    cluster_id = _cluster_id()
    for node in cluster:
        # Arguments in a 0600 file (java expands @file), so the password is never on a
        # command line another user could read.
        argfile = paths.node_dir(node.id) / "format.args"
        lines = ["kafka.tools.StorageTool", "format", "--ignore-formatted",
                 "--cluster-id", cluster_id, "--config", str(paths.config_file(node.id)),
                 "--add-scram", f"{SASL_MECHANISM}=[name={SASL_USER},password={password}]"]
        write_secret(argfile, "\n".join(f'"{line}"' for line in lines))
        try:
            result = subprocess.run(
                [java, "-Xmx256m", f"-Dlog4j2.configurationFile="
                 f"{paths.node_dir(node.id) / 'log4j2.properties'}", "-cp", classpath,
                 f"@{argfile}"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
            raise KafkaError(f"formatting Kafka's storage in {paths.data_dir(node.id)} "
                             f"failed:\n{tail}")


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 characters),
    never starting with "-" (the format tool would read it as an option; Kafka's own
    Uuid.randomUuid avoids that too)."""
    import base64

    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


# -- start / stop -------------------------------------------------------------------------

def start(paths: KafkaPaths, brokers: int = 1, port: int = 0, wait_s: float = 120.0) -> bool:
    """Start this home's Kafka nodes that are not running (formatting a new cluster of
    `brokers` nodes on first use). True when a node was started now."""
    cluster = nodes(paths)
    if cluster and len(cluster) != brokers:
        raise KafkaError(
            f"this home's Kafka cluster has {len(cluster)} broker(s), not {brokers}: use "
            f"--brokers {len(cluster)}, or `tripflow services down` and remove "
            f"{paths.root} and {paths.state_file} to start a new one (its records are lost)")
    if cluster and is_up(paths):
        return False
    java, classpath = _java(), _classpath()
    paths.home.mkdir(parents=True, exist_ok=True)
    if not cluster or not formatted(paths):
        if paths.root.exists():
            shutil.rmtree(paths.root)  # a half-made cluster from a killed first start
        cluster = cluster or _plan(brokers, port)
        write_json(paths.state_file, {"nodes": [n.__dict__ for n in cluster], "pids": {}})
        _write_configs(paths, cluster)
        _format(paths, java, classpath, cluster)
    else:
        _write_configs(paths, cluster)  # config follows the code; data stays
    launched = {node.id: _launch(paths, node, java, classpath, len(cluster))
                for node in cluster if pid(paths, node.id) is None}
    _wait(paths, cluster, wait_s, launched)
    return bool(launched)


def start_node(paths: KafkaPaths, node: int, wait_s: float = 120.0) -> None:
    """Start one stopped node again and wait until the cluster names it (tests' faults)."""
    cluster = nodes(paths)
    launched = {}
    if pid(paths, node) is None:
        launched[node] = _launch(paths, next(n for n in cluster if n.id == node), _java(),
                                 _classpath(), len(cluster))
    _wait(paths, cluster, wait_s, launched)


def _launch(paths: KafkaPaths, node: Node, java: str, classpath: str,
            count: int) -> subprocess.Popen[bytes]:
    for port in (node.port, node.controller_port, node.sasl_port):
        if not port_free(port):
            raise KafkaError(
                f"port {port} of Kafka broker {node.id} is taken by another program: free it, "
                f"or `tripflow services down` and remove {paths.root} and {paths.state_file} "
                "to start a new cluster on other ports (its records are lost)")
    log = paths.log_file(node.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    heap = _heap(count)
    with (log.parent / f"kafka-{node.id}.out").open("ab") as out:
        proc = subprocess.Popen(
            [java, f"-Xmx{heap}", "-Xms64m",
             # On a small machine the broker's CPU went to the JVM's own threads: C2's
             # compilations (a fresh broker's first million records cost 3-4 µs each,
             # 2-2.6 µs once warm, with G1) and G1's concurrent threads. The C1 compiler
             # alone and the serial collector (its young pauses take a few ms with this
             # heap): 1.8 µs cold, 0.9-1.2 µs warm (bench/bench_produce.py, issue 20).
             "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
             "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user> files
             "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={paths.node_dir(node.id) / 'log4j2.properties'}",
             "kafka.Kafka", str(paths.config_file(node.id))],
            env={**os.environ, "CLASSPATH": classpath},  # a short command line for `ps`
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
    _set_pid(paths, node.id, proc.pid)
    return proc


def _last_errors(log: Path, lines: int = 8) -> str:
    """The end of a node's JVM output and its last ERROR lines: why it stopped, in the
    message itself (a test's logs are gone once its session ends)."""
    found: list[str] = []
    for path in (log.with_suffix(".out"), log):
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if path == log:
            text = [line for line in text if " ERROR " in line or "Exception" in line]
        found += text[-lines:]
    return ("\n" + "\n".join(found)) if found else ""


def _wait(paths: KafkaPaths, cluster: list[Node], wait_s: float,
          launched: dict[int, subprocess.Popen[bytes]]) -> None:
    address = ",".join(n.address for n in cluster)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        # Judged by the processes started here (until their exec, /proc shows another
        # command line), the others by their PID files.
        dead = [n.id for n in cluster
                if (launched[n.id].poll() is not None if n.id in launched
                    else pid(paths, n.id) is None)]
        if dead:
            log = paths.log_file(dead[0])
            raise KafkaError(f"Kafka broker {dead[0]} exited at start; see {log} and "
                             f"{log.with_suffix('.out')}{_last_errors(log)}")
        if answers(address, len(cluster), timeout=1.0):
            return
        time.sleep(0.5)
    raise KafkaError(f"the Kafka cluster did not answer on {address} within {wait_s:.0f} s; "
                     f"see {paths.home / 'logs'}/kafka-*.log")


def stop_node(paths: KafkaPaths, node: int, *, kill: bool = False,
              timeout_s: float = 60.0) -> bool:
    """Stop one node: SIGTERM (a clean shutdown), SIGKILL after `timeout_s` or at once
    when `kill`. True when it ran."""
    found = pid(paths, node)
    if found is None:
        return False
    os.kill(found, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid(paths, node) is not None:
        if time.monotonic() > deadline:
            os.kill(found, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)
    _set_pid(paths, node, None)
    return True


def stop(paths: KafkaPaths) -> bool:
    """Stop every node this home started (never another process). True when one ran."""
    found = [n.id for n in nodes(paths) if pid(paths, n.id)]
    for node in found:  # all at once: a controller quorum shuts down together
        os.kill(_pids(paths)[node], signal.SIGTERM)
    for node in found:
        stop_node(paths, node)
    return bool(found)
