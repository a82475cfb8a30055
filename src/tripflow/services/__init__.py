"""Embedded services: PostgreSQL and a Kafka broker, started by tripflow itself.

The embedded broker is Apache Kafka (services/kafka.py: 1..N KRaft brokers, records on
disk) when Java ≥ 17 is present, else tansu (services/broker.py: in memory, a restart
loses its records); TRIPFLOW_BROKER=kafka|tansu chooses, TRIPFLOW_BROKERS sets Kafka's count.

`resolve(settings)` is what a command calls once, first: it returns the settings with
both addresses set — the configured ones, or the embedded services' (started here when
not running). Steps below it, handed those settings, read the addresses and never start
anything. `pg_dsn` / `kafka_bootstrap` / `endpoints` still start an embedded service for
a caller holding settings without addresses (the Python API: tests, DAG tasks).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tripflow.services import broker, kafka, postgres
from tripflow.settings import Settings


@dataclass(frozen=True)
class Endpoints:
    pg_dsn: str
    kafka_bootstrap: str


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str | None
    up: bool
    embedded: bool
    note: str


class ServiceError(RuntimeError):
    """A service could not be started; the message says what went wrong and what to do."""


def _pg_paths(settings: Settings) -> postgres.PgPaths:
    return postgres.PgPaths(settings.home_dir)


def _broker_paths(settings: Settings) -> broker.BrokerPaths:
    return broker.BrokerPaths(settings.home_dir)


def kafka_paths(settings: Settings) -> kafka.KafkaPaths:
    return kafka.KafkaPaths(settings.home_dir)


def broker_kind(settings: Settings) -> str:
    """"kafka" or "tansu": TRIPFLOW_BROKER, else the kind this home already has (a Kafka
    cluster on disk, a running tansu), else Apache Kafka when Java ≥ 17 is present (and
    its jars are cached or Maven can fetch them)."""
    if settings.broker != "auto":
        return settings.broker
    if kafka.nodes(kafka_paths(settings)):
        return "kafka"
    if broker.running(_broker_paths(settings)):
        return "tansu"
    return "kafka" if kafka.java_ok() and kafka.jars_available() else "tansu"


def kafka_brokers(settings: Settings) -> int:
    """How many Kafka brokers: TRIPFLOW_BROKERS, else the existing cluster's, else 1."""
    return settings.brokers or len(kafka.nodes(kafka_paths(settings))) or 1


TANSU_WARNING = ("the embedded broker is tansu, which keeps records in memory only: a broker "
                 "restart loses every record not yet in bronze. Install Java ≥ 17 and Maven "
                 "(or set TRIPFLOW_BROKER=kafka) for a persistent Apache Kafka broker.")


@contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """Serialise start/stop across processes sharing one TRIPFLOW_HOME."""
    with (settings.home_dir / "services.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def up(settings: Settings, *, pg: bool = True, kafka: bool = True) -> list[str]:
    """Start the embedded services that are not configured externally and not running.

    Returns the names of the services started now (empty on a second call: idempotent).
    """
    started: list[str] = []
    with _lock(settings):
        try:
            if pg and not settings.pg_dsn and postgres.start(_pg_paths(settings), settings.pg_port):
                started.append("postgresql")
        except (postgres.PostgresError, OSError) as err:
            raise ServiceError(f"embedded PostgreSQL could not start: {err}") from err
        if kafka and not settings.kafka_bootstrap and _start_broker(settings):
            started.append("broker")
    return started


def _start_broker(settings: Settings) -> bool:
    try:
        if broker_kind(settings) == "kafka":
            return kafka.start(kafka_paths(settings), kafka_brokers(settings),
                               settings.broker_port)
        return broker.start(_broker_paths(settings), settings.broker_port)
    except kafka.KafkaError as err:
        raise ServiceError(f"embedded Apache Kafka could not start: {err}") from err
    except (broker.BrokerError, OSError) as err:
        raise ServiceError(f"embedded broker could not start: {err}") from err


def down(settings: Settings) -> list[str]:
    """Stop the embedded services this TRIPFLOW_HOME started; nothing else."""
    stopped: list[str] = []
    with _lock(settings):
        if broker.stop(_broker_paths(settings)):
            stopped.append("broker")
        if kafka.stop(kafka_paths(settings)):
            stopped.append("kafka")
        try:
            if postgres.stop(_pg_paths(settings)):
                stopped.append("postgresql")
        except (postgres.PostgresError, OSError) as err:
            raise ServiceError(f"embedded PostgreSQL could not stop: {err}") from err
    return stopped


def pg_dsn(settings: Settings, *, start: bool = True) -> str:
    """The PostgreSQL DSN: TRIPFLOW_PG_DSN, or the embedded server's (started if needed)."""
    if settings.pg_dsn:
        return settings.pg_dsn
    if start:
        up(settings, kafka=False)
    url = postgres.dsn(_pg_paths(settings))
    if url is None:
        raise ServiceError("embedded PostgreSQL is not set up; run `tripflow services up`")
    return url


def kafka_bootstrap(settings: Settings, *, start: bool = True) -> str:
    """Kafka bootstrap servers: TRIPFLOW_KAFKA_BOOTSTRAP, or the embedded broker's."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    if start:
        up(settings, pg=False)
    if broker_kind(settings) == "kafka":
        address = kafka.bootstrap(kafka_paths(settings))
    else:
        address = broker.bootstrap(_broker_paths(settings))
    if address is None:
        raise ServiceError("embedded broker is not set up; run `tripflow services up`")
    return address


def resolve(settings: Settings, *, pg: bool = True, kafka: bool = True) -> Settings:
    """`settings` with the PostgreSQL DSN (`pg`) and the Kafka bootstrap servers (`kafka`)
    set: the configured ones, else the embedded services', which are started now when
    they are not running. The one place a command starts services; unchanged settings
    come back as they are."""
    update: dict[str, str] = {}
    if pg and not settings.pg_dsn:
        update["pg_dsn"] = pg_dsn(settings)
    if kafka and not settings.kafka_bootstrap:
        update["kafka_bootstrap"] = kafka_bootstrap(settings)
    return settings.model_copy(update=update) if update else settings


def endpoints(settings: Settings) -> Endpoints:
    return Endpoints(pg_dsn=pg_dsn(settings), kafka_bootstrap=kafka_bootstrap(settings))


def status(settings: Settings) -> list[ServiceStatus]:
    """What is configured or running, and whether it answers; starts nothing."""
    result: list[ServiceStatus] = []
    if settings.pg_dsn:
        result.append(ServiceStatus("postgresql", settings.pg_dsn,
                                    postgres.answers(settings.pg_dsn), False,
                                    "external (TRIPFLOW_PG_DSN)"))
    else:
        paths = _pg_paths(settings)
        result.append(ServiceStatus("postgresql", postgres.dsn(paths), postgres.is_up(paths), True,
                                    f"embedded, data in {paths.data}"))
    if settings.kafka_bootstrap:
        result.append(ServiceStatus("broker", settings.kafka_bootstrap,
                                    _external_broker_answers(settings), False,
                                    "external (TRIPFLOW_KAFKA_BOOTSTRAP)"))
    elif broker_kind(settings) == "kafka":
        kpaths = kafka_paths(settings)
        cluster = kafka.nodes(kpaths)
        running = sum(1 for node in cluster if kafka.pid(kpaths, node.id))
        result.append(ServiceStatus(
            "broker", kafka.bootstrap(kpaths), bool(cluster) and kafka.is_up(kpaths), True,
            f"embedded Apache Kafka (KRaft), {running}/{len(cluster) or kafka_brokers(settings)} "
            f"broker(s) running, records on disk in {kpaths.root}"))
    else:
        bpaths = _broker_paths(settings)
        result.append(ServiceStatus("broker", broker.bootstrap(bpaths), broker.is_up(bpaths), True,
                                    "embedded tansu: messages are kept in memory only "
                                    "(a restart loses them)"))
    return result


def _external_broker_answers(settings: Settings) -> bool:
    """True when the configured cluster returns metadata (with the configured security)."""
    from tripflow.ingestion.admin import IngestionError, broker_metadata

    try:
        broker_metadata(settings, timeout_s=3.0)
        return True
    except IngestionError:
        return False

