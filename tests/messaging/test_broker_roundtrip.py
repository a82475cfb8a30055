"""A produce/consume round trip through the embedded broker with confluent-kafka."""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tripflow.messaging.config import consumer_config, producer_config


def test_thousand_keyed_messages_come_back_once_each(settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    replicas = min(3, len(admin.list_topics(timeout=30).brokers))  # 2 must be in sync on 3
    admin.create_topics([NewTopic(settings.topic, num_partitions=3,
                                  replication_factor=replicas)])[settings.topic].result(timeout=30)

    producer = Producer(producer_config(settings))
    delivered: list[str] = []
    sent = {f"value-{i}".encode(): f"session-{i % 37}".encode() for i in range(1000)}
    for value, key in sent.items():
        producer.produce(settings.topic, value=value, key=key,
                         on_delivery=lambda err, msg: delivered.append(err) if err else None)
    assert producer.flush(30) == 0
    assert delivered == []  # no delivery errors

    consumer = Consumer(consumer_config(settings, f"roundtrip-{settings.topic}"))
    consumer.subscribe([settings.topic])
    received: Counter[tuple[bytes, bytes]] = Counter()
    partition_of_key: dict[bytes, set[int]] = {}
    idle_since = time.monotonic()
    deadline = time.monotonic() + 60
    # "Done" = nothing new for a while, never the high watermark (a tansu quirk).
    while time.monotonic() - idle_since < 5 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        idle_since = time.monotonic()
        received[(msg.key(), msg.value())] += 1
        partition_of_key.setdefault(msg.key(), set()).add(msg.partition())
    consumer.close()

    assert received == Counter({(key, value): 1 for value, key in sent.items()})
    assert all(len(parts) == 1 for parts in partition_of_key.values())  # keyed placement
