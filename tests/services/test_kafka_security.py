"""Secured cluster connections: every client (producer, consumers, admin) logs in with
SASL/SCRAM-SHA-512 on the session's 3-broker Apache Kafka cluster (its SASL_PLAINTEXT
listener, the user created at format time); a wrong password fails fast, clearly, and no
password is ever printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from tests.kits import batchkit
from tripflow.messaging.config import SecurityConfigError, security_config
from tripflow.records.generate import generate
from tripflow.services import kafka
from tripflow.settings import Settings

CLI_TIMEOUT = 90  # below what a client retrying forever would take; the clients' own is 120


@pytest.fixture
def secured(kafka_cluster: Settings, tripflow_env: dict[str, str]) -> dict[str, str]:
    """`tripflow` environment on the cluster's SASL listener, the password from a file."""
    paths = kafka.KafkaPaths(kafka_cluster.home_dir)
    return {**tripflow_env,
            "TRIPFLOW_KAFKA_BOOTSTRAP": str(kafka.sasl_bootstrap(paths)),
            "TRIPFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TRIPFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TRIPFLOW_KAFKA_SASL_USERNAME": kafka.SASL_USER,
            "TRIPFLOW_KAFKA_SASL_PASSWORD_FILE": str(paths.password_file)}


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, int]:
    folder = tmp_path / "gen"
    generate(folder, start=batchkit.dt.date(2016, 1, 5), days=1, seed=3, sessions_per_day=40)
    return folder, len(batchkit.file_lines(batchkit.day_files(folder)))


def test_right_credentials_work_for_every_client(secured: dict[str, str], settings: Settings,
                                                 data: tuple[Path, int], tripflow_cli) -> None:
    folder, count = data
    produced = tripflow_cli("produce", str(folder), "--timeout", "120", env=secured,
                            timeout=CLI_TIMEOUT)
    assert f"delivered {count:,}" in produced.stdout  # admin (topic) + producers
    bronze = tripflow_cli("bronze", "--until-idle", "2", env=secured, timeout=CLI_TIMEOUT)
    assert f"{count:,} records read, {count:,} written" in " ".join(bronze.stdout.split())
    tripflow_cli("stream", "--until-idle", "2", env=secured, timeout=CLI_TIMEOUT)
    assert settings.pg_dsn
    with psycopg.connect(settings.pg_dsn) as conn:
        assert conn.execute("select records from tripflow.hot_state").fetchone() == (count,)
    status = tripflow_cli("services", "status", "--json", env=secured)
    assert json.loads(status.stdout)["broker"] == "up"  # status logs in too
    password = Path(secured["TRIPFLOW_KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()
    for result in (produced, bronze, status):
        assert password not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [["produce", "--timeout", "120"],
                                     ["bronze", "--until-idle", "5"],
                                     ["stream", "--until-idle", "5"]])
def test_a_wrong_password_fails_fast_with_a_clear_message(
        secured: dict[str, str], data: tuple[Path, int], command: list[str],
        tripflow_cli) -> None:
    wrong = "not-the-password-8d1f"
    env = {k: v for k, v in secured.items() if k != "TRIPFLOW_KAFKA_SASL_PASSWORD_FILE"}
    env["TRIPFLOW_KAFKA_SASL_PASSWORD"] = wrong
    args = [command[0], str(data[0]), *command[1:]] if command[0] == "produce" else command
    result = tripflow_cli(*args, env=env, timeout=CLI_TIMEOUT, check=False)
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, text
    assert "refused the credentials of user 'tripflow'" in text, text
    assert "TRIPFLOW_KAFKA_SASL_PASSWORD" in text
    assert "Traceback" not in text
    assert wrong not in text


def test_security_settings_reach_every_client_config(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    os.chmod(secret, 0o600)
    base = {"home": tmp_path, "kafka_bootstrap": "k:9094"}
    from_file = Settings(**base, kafka_sasl_username="u", kafka_sasl_password_file=secret)
    assert security_config(from_file) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "from-a-file"}
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    direct = Settings(**base, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                      kafka_sasl_username="u", kafka_sasl_password=SecretStr("s3cret"),
                      kafka_ssl_ca_file=ca)
    assert security_config(direct) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
        "sasl.password": "s3cret", "ssl.ca.location": str(ca)}
    assert "s3cret" not in repr(direct) and "s3cret" not in str(direct.model_dump())
    assert security_config(Settings(**base)) == {}
    with pytest.raises(SecurityConfigError, match="TRIPFLOW_KAFKA_SASL_USERNAME"):
        security_config(Settings(**base, kafka_security_protocol="SASL_SSL"))
    with pytest.raises(SecurityConfigError, match="TRIPFLOW_KAFKA_SASL_PASSWORD"):
        security_config(Settings(**base, kafka_sasl_username="u"))
    with pytest.raises(SecurityConfigError, match="not a readable file"):
        security_config(Settings(**base, kafka_security_protocol="SSL",
                                 kafka_ssl_ca_file=tmp_path / "missing.pem"))
