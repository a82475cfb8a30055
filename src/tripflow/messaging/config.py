"""Kafka client configuration shared by every producer, consumer and admin client.

One place for the settings that keep tripflow correct against both Apache Kafka and the
embedded tansu broker (see the quirks in README, "The embedded broker").
"""

from __future__ import annotations

from typing import Any

from tripflow import services
from tripflow.settings import Settings


def base_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": services.kafka_bootstrap(settings),
        "client.id": "tripflow",
        # librdkafka's own log lines are noise for users; errors reach us through callbacks.
        "log_level": 3,
    }
    config.update(overrides)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return base_config(
        settings,
        **{
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": 120_000,
            **overrides,
        },
    )


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return base_config(
        settings,
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Group joins take session.timeout.ms / 2 on tansu: keep it short.
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "isolation.level": "read_uncommitted",  # tripflow never uses transactions
            **overrides,
        },
    )
