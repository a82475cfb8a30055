"""deploy/docker-compose.yml parses and references only files that exist.

No Docker engine (nor compose client) runs here, so the file is checked as YAML: the
services the cluster setting needs, their build files, mounted files and env placeholders.
"""

from __future__ import annotations

import re
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
