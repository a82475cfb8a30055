"""deploy/docker-compose.yml parses and references only files that exist.

No Docker engine (nor compose plugin) runs here, so the file is checked as YAML (the
services the cluster setting needs, their build files, mounted files and env placeholders)
and loaded by compose-go, the library `docker compose config` is built on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_has_the_cluster_services() -> None:
    services = _compose()["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3", "postgres", "tripflow-stream", "superset",
                 "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert name in services, name
    for broker in ("kafka-1", "kafka-2", "kafka-3"):
        env = services[broker]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert services[broker]["volumes"], f"{broker} has no data volume"
    assert services["tripflow-stream"]["command"] == ["stream"]
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert any(v.startswith("../dags:") for v in services["airflow-scheduler"]["volumes"])


def test_compose_references_only_existing_files() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_secrets_come_from_env_file_with_placeholders_only() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (DEPLOY / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.M))
    assert used <= defined, f"not in .env.example: {sorted(used - defined)}"
    for line in example.splitlines():
        if "PASSWORD=" in line or "SECRET" in line.split("=")[0]:
            value = line.split("=", 1)[1]
            assert value == "" or value.startswith("change-me"), line
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_kafka_is_4x_kraft_and_tripflow_logs_in_with_scram() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        broker = services[name]
        assert broker["image"].startswith("apache/kafka:4."), broker["image"]
        env = broker["environment"]
        listeners = dict(item.split(":", 1) for item in
                         env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert listeners["SASL"] == "SASL_PLAINTEXT"
        assert "SASL://:9094" in env["KAFKA_LISTENERS"].split(",")
        assert f"SASL://{name}:9094" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert "ScramLoginModule" in env[
            "KAFKA_LISTENER_NAME_SASL_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
        assert "ports" not in broker  # nothing of Kafka is published outside the network
    # The SCRAM user exists before the stream worker starts; the worker uses it.
    init = services["kafka-init"]
    assert "SCRAM-SHA-512=[password=$$KAFKA_SASL_PASSWORD]" in init["command"][0] or \
        "SCRAM-SHA-512=[password=$KAFKA_SASL_PASSWORD]" in init["command"][0]
    stream = services["tripflow-stream"]
    assert stream["depends_on"]["kafka-init"] == {"condition": "service_completed_successfully"}
    env = stream["environment"]
    assert env["TRIPFLOW_KAFKA_BOOTSTRAP"] == "kafka-1:9094,kafka-2:9094,kafka-3:9094"
    assert env["TRIPFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["TRIPFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["TRIPFLOW_KAFKA_SASL_USERNAME"] == "tripflow"
    assert env["TRIPFLOW_KAFKA_SASL_PASSWORD"].startswith("${KAFKA_SASL_PASSWORD")
    # tripflow's own Settings read exactly these variables.
    from tripflow.settings import Settings

    settings = Settings(**{k.removeprefix("TRIPFLOW_").lower(): v for k, v in env.items()
                           if k.startswith("TRIPFLOW_KAFKA_")})
    assert settings.kafka_sasl_username == "tripflow"
    assert settings.kafka_security_protocol == "SASL_PLAINTEXT"


def _composecheck(compose: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """tools/composecheck: the compose file loaded by compose-go, as `docker compose
    config` loads it (built by `make test` into .tools/)."""
    binary = os.environ.get("TRIPFLOW_COMPOSECHECK") or shutil.which("composecheck")
    assert binary, "composecheck is missing: run `make test` (it builds .tools/composecheck)"
    return subprocess.run([binary, str(compose), str(env_file)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_compose_config_loads_with_the_example_env() -> None:
    result = _composecheck(DEPLOY / "docker-compose.yml", DEPLOY / ".env.example")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == set(_compose()["services"])


def test_compose_config_rejects_a_missing_setting_and_a_broken_reference(
        tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("\n".join(line for line in (DEPLOY / ".env.example").read_text()
                             .splitlines() if not line.startswith("KAFKA_CLUSTER_ID=")))
    result = _composecheck(DEPLOY / "docker-compose.yml", env)
    assert result.returncode == 1
    assert "set KAFKA_CLUSTER_ID in deploy/.env" in result.stderr

    broken = tmp_path / "docker-compose.yml"
    text = (DEPLOY / "docker-compose.yml").read_text()
    text = text.replace("./", str(DEPLOY) + "/").replace("context: ..", f"context: {ROOT}")
    broken.write_text(text.replace("\nservices:\n", "\nservices:\n  oops:\n    image: x\n"
                                   "    depends_on: [nowhere]\n", 1))
    result = _composecheck(broken, DEPLOY / ".env.example")
    assert result.returncode == 1
    assert "nowhere" in result.stderr
