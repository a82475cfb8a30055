"""Topic administration: the raw-log topic exists, as configured, before anything is sent.

Created through the admin API with an explicit partition count, replication factor and
retention (TRIPFLOW_TOPIC_PARTITIONS / _REPLICATION / _RETENTION_MS), never by a
broker's auto-create defaults. An existing topic is used as it is: with fewer partitions
than asked it is reported, not grown, because adding partitions moves keys (sessions)
to other partitions and would break per-session order for consumers already reading it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tripflow.messaging.config import auth_failure, base_config
from tripflow.settings import Settings

DEFAULT_CONNECT_TIMEOUT_S = 30.0


class IngestionError(RuntimeError):
    """Producing cannot go on; the message says what went wrong and what to do."""


class BrokerUnreachable(IngestionError):
    """No Kafka broker answered within the time allowed."""


class BrokerAuthFailed(IngestionError):
    """The cluster refused tripflow's SASL credentials."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication: int
    created: bool  # created by this call (False: it existed)
    warning: str | None = None  # e.g. fewer partitions than configured


class _LastError:
    """Keeps librdkafka's last connection error, to say *why* a broker is unreachable."""

    def __init__(self) -> None:
        self.message: str | None = None
        self.auth: str | None = None  # an authentication failure: no point in retrying

    def __call__(self, error: KafkaError) -> None:
        self.message = error.str()
        if error.code() == KafkaError._AUTHENTICATION:
            self.auth = error.str()


def admin_client(settings: Settings, last_error: _LastError | None = None) -> AdminClient:
    # log_level 0: librdkafka's own retry lines would bury the one clear error we raise.
    config = base_config(settings, **{"client.id": "tripflow-admin", "log_level": 0})
    if last_error is not None:
        config["error_cb"] = last_error
    return AdminClient(config)


def ensure_topic(
    settings: Settings,
    *,
    partitions: int | None = None,
    replication: int | None = None,
    retention_ms: int | None = None,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> TopicInfo:
    """Create `settings.topic` unless it exists; report how it is.

    Defaults come from settings: partitions 6, replication min(3, brokers), retention
    7 days. Raises BrokerUnreachable when no broker answers within `timeout_s`, and
    IngestionError when the topic cannot be created.
    """
    partitions = partitions or settings.topic_partitions
    retention_ms = settings.topic_retention_ms if retention_ms is None else retention_ms
    last_error = _LastError()
    admin = admin_client(settings, last_error)
    bootstrap = base_config(settings)["bootstrap.servers"]
    metadata = _metadata(admin, bootstrap, timeout_s, last_error, settings)
    brokers = len(metadata.brokers)
    replication = replication or settings.topic_replication or min(3, brokers)

    existing = metadata.topics.get(settings.topic)
    if existing is None or existing.error is not None:
        if replication > brokers:
            raise IngestionError(
                f"topic {settings.topic!r} needs replication factor {replication} but the "
                f"cluster has {brokers} broker(s); lower TRIPFLOW_TOPIC_REPLICATION"
            )
        new = NewTopic(settings.topic, num_partitions=partitions, replication_factor=replication,
                       config={"retention.ms": str(retention_ms)})
        try:
            admin.create_topics([new], operation_timeout=timeout_s)[settings.topic].result(
                timeout=timeout_s
            )
        except KafkaException as err:
            error = err.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                raise IngestionError(
                    f"could not create topic {settings.topic!r}: {error.str()}"
                ) from None
        else:
            return TopicInfo(settings.topic, partitions, replication, created=True)
        metadata = _metadata(admin, bootstrap, timeout_s, last_error, settings)
        existing = metadata.topics[settings.topic]

    have = len(existing.partitions)
    replicas = min((len(p.replicas) for p in existing.partitions.values()), default=0)
    warning = None
    if have < partitions:
        warning = (
            f"topic {settings.topic!r} exists with {have} partition(s), fewer than the "
            f"{partitions} configured; using it as it is (adding partitions would move "
            f"sessions to other partitions). Delete the topic to recreate it, or set "
            f"TRIPFLOW_TOPIC_PARTITIONS={have} to silence this."
        )
    return TopicInfo(settings.topic, have, replicas, created=False, warning=warning)


def topic_id(settings: Settings, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> str | None:
    """The topic's id (a new one each time the topic is created: the embedded broker
    creates it anew after a restart, with an empty log), "" when the broker gives none,
    None when the topic does not exist. Raises BrokerUnreachable."""
    last_error = _LastError()
    admin = admin_client(settings, last_error)
    metadata = _metadata(admin, base_config(settings)["bootstrap.servers"], timeout_s,
                         last_error, settings)
    existing = metadata.topics.get(settings.topic)
    if existing is None or existing.error is not None:
        return None
    future = admin.describe_topics(TopicCollection([settings.topic]),
                                   request_timeout=timeout_s)[settings.topic]
    try:
        found = future.result(timeout=timeout_s)
    except KafkaException as err:
        if err.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return str(found.topic_id) if found.topic_id is not None else ""


# librdkafka's default `message.max.bytes`: the most a producer sends in one record.
PRODUCER_MESSAGE_MAX_BYTES = 1_000_000


def message_limit(settings: Settings, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> int:
    """The largest record the topic takes: the smaller of the producer's limit and the
    topic's `max.message.bytes` (when the broker tells it)."""
    admin = admin_client(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource]
        entry = configs.result(timeout=timeout_s).get("max.message.bytes")
        topic_limit = int(entry.value) if entry is not None and entry.value else None
    except (KafkaException, ValueError, TypeError):  # a broker that does not say
        topic_limit = None
    return min(PRODUCER_MESSAGE_MAX_BYTES, topic_limit or PRODUCER_MESSAGE_MAX_BYTES)


def broker_metadata(settings: Settings, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S):
    """The cluster's metadata through tripflow's client settings (security included).
    Raises BrokerUnreachable, or BrokerAuthFailed as soon as the credentials are refused."""
    last_error = _LastError()
    admin = admin_client(settings, last_error)
    return _metadata(admin, base_config(settings)["bootstrap.servers"], timeout_s, last_error,
                     settings)


def _metadata(admin: AdminClient, bootstrap: str, timeout_s: float, last_error: _LastError,
              settings: Settings):
    """Cluster metadata, or BrokerUnreachable after `timeout_s`; BrokerAuthFailed as soon
    as the cluster refuses the credentials (asked in short rounds to notice it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, left)))
        except KafkaException as err:
            admin.poll(0)  # serves error_cb: tells why
            if last_error.auth is not None:
                raise BrokerAuthFailed(auth_failure(settings, last_error.auth)) from None
            if time.monotonic() < deadline:
                continue
            why = last_error.message or err.args[0].str()
            raise BrokerUnreachable(
                f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s ({why}). "
                "Check TRIPFLOW_KAFKA_BOOTSTRAP, or unset it to use the embedded broker "
                "(`tripflow services up`)."
            ) from None
