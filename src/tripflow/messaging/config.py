"""Kafka client configuration shared by every producer, consumer and admin client.

One place for the settings that keep tripflow correct against both Apache Kafka and the
embedded tansu broker (see the quirks in README, "The embedded broker").
"""

from __future__ import annotations

from typing import Any

from tripflow import services
from tripflow.settings import Settings


class SecurityConfigError(ValueError):
    """The Kafka security settings are incomplete or unreadable; the message says which."""


def base_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": services.kafka_bootstrap(settings),
        "client.id": "tripflow",
        # librdkafka's own log lines are noise for users; errors reach us through callbacks.
        "log_level": 3,
        **security_config(settings),
    }
    config.update(overrides)
    return config


def security_config(settings: Settings) -> dict[str, Any]:
    """TLS / SASL settings of every client (producer, consumers, admin), from
    TRIPFLOW_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD (or
    _SASL_PASSWORD_FILE) and _SSL_CA_FILE. Empty for a plain connection."""
    protocol = settings.kafka_security_protocol
    if protocol is None:
        protocol = "SASL_PLAINTEXT" if settings.kafka_sasl_username else None
    if protocol is None or protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol}
    if protocol.startswith("SASL_"):
        if not settings.kafka_sasl_username:
            raise SecurityConfigError(f"security protocol {protocol} needs a user: set "
                                      "TRIPFLOW_KAFKA_SASL_USERNAME")
        config.update({
            "sasl.mechanism": settings.kafka_sasl_mechanism or "SCRAM-SHA-512",
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": sasl_password(settings),
        })
    if settings.kafka_ssl_ca_file is not None and protocol.endswith("SSL"):
        if not settings.kafka_ssl_ca_file.is_file():
            raise SecurityConfigError(f"TRIPFLOW_KAFKA_SSL_CA_FILE {settings.kafka_ssl_ca_file} "
                                      "is not a readable file")
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
    return config


def sasl_password(settings: Settings) -> str:
    """The SASL password: TRIPFLOW_KAFKA_SASL_PASSWORD, else the first line of
    TRIPFLOW_KAFKA_SASL_PASSWORD_FILE. Never logged or printed."""
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    path = settings.kafka_sasl_password_file
    if path is None:
        raise SecurityConfigError("SASL needs a password: set TRIPFLOW_KAFKA_SASL_PASSWORD or "
                                  "TRIPFLOW_KAFKA_SASL_PASSWORD_FILE")
    try:
        return path.expanduser().read_text().splitlines()[0]
    except (OSError, IndexError):
        raise SecurityConfigError(f"cannot read the SASL password from {path} "
                                  "(TRIPFLOW_KAFKA_SASL_PASSWORD_FILE)") from None


def auth_failure(settings: Settings, error: str) -> str:
    """What to tell a user whose credentials the cluster refused."""
    source = ("TRIPFLOW_KAFKA_SASL_PASSWORD" if settings.kafka_sasl_password is not None
              else "TRIPFLOW_KAFKA_SASL_PASSWORD_FILE")
    return (f"the Kafka cluster refused the credentials of user "
            f"{settings.kafka_sasl_username!r} ({error}). Check TRIPFLOW_KAFKA_SASL_USERNAME, "
            f"the password in {source} and TRIPFLOW_KAFKA_SASL_MECHANISM "
            f"({settings.kafka_sasl_mechanism or 'SCRAM-SHA-512'}).")


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
