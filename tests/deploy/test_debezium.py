"""deploy/debezium: Debezium Server runs the capture `tripflow cdc capture` runs embedded.

No container runs here, so the configuration is checked against tripflow's own: every
connector setting that is not an address or a credential equals the embedded engine's
(`tripflow.cdc.capture.engine_properties`), and compose wires the files and secrets."""

from __future__ import annotations

from pathlib import Path

import yaml

from tripflow.cdc.capture import engine_properties
from tripflow.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Addresses and credentials differ between a laptop and the cluster (and the engine name
# is the embedded engine's own).
_LOCAL = {"name", "database.hostname", "database.port", "database.dbname", "database.user",
          "database.password", "offset.storage.jdbc.connection.url",
          "offset.storage.jdbc.connection.user", "offset.storage.jdbc.connection.password",
          "key.converter.schemas.enable", "value.converter.schemas.enable",
          "max.batch.size", "poll.interval.ms"}


def _server_properties() -> dict[str, str]:
    lines = (DEPLOY / "debezium" / "application.properties").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_debezium_server_captures_as_the_embedded_engine_does() -> None:
    server = _server_properties()
    source = {k.removeprefix("debezium.source."): v for k, v in server.items()
              if k.startswith("debezium.source.")}
    embedded = engine_properties(Settings(), "postgresql://u:p@h:5432/tripflow",
                                 "tripflow_cdc", "secret")
    assert {k: v for k, v in embedded.items() if k not in _LOCAL} == {
        k: v for k, v in source.items() if k not in _LOCAL}
    assert source["database.user"] == "tripflow_cdc" == embedded["database.user"]
    assert source["database.password"] == "${TRIPFLOW_CDC_PASSWORD}"
    assert source["offset.storage.jdbc.connection.url"].endswith("?currentSchema=tripflow")
    # Bare envelopes, as the apply side reads them.
    assert server["debezium.format.value"] == "json"
    assert server["debezium.format.value.schemas.enable"] == "false"
    assert server["debezium.sink.type"] == "kafka"
    assert server["debezium.sink.kafka.producer.sasl.mechanism"] == "SCRAM-SHA-512"


def test_compose_runs_the_capture_and_the_apply() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    command = services["postgres"]["command"]
    assert "wal_level=logical" in command
    debezium = services["debezium"]
    assert debezium["image"].startswith("quay.io/debezium/server:3.6")
    assert "./debezium/application.properties:/debezium/config/application.properties:ro" \
        in debezium["volumes"]
    assert set(debezium["environment"]) >= {"TRIPFLOW_CDC_PASSWORD", "KAFKA_SASL_PASSWORD",
                                            "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert services["tripflow-cdc-setup"]["command"] == ["cdc", "setup"]
    assert services["tripflow-cdc-apply"]["command"] == ["cdc", "apply", "--metrics-port", "9108"]
    assert "TRIPFLOW_CDC_PASSWORD=change-me-cdc" in (DEPLOY / ".env.example").read_text()
