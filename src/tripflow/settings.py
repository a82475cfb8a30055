"""Settings from TRIPFLOW_* environment variables (see ARCHITECTURE.md, "Settings")."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob tripflow reads. Unset addresses mean "use the embedded service"."""

    model_config = SettingsConfigDict(env_prefix="TRIPFLOW_", extra="ignore")

    home: Path = Field(default=Path(".tripflow"), description="state of embedded services, logs")
    pg_dsn: str | None = Field(default=None, description="PostgreSQL connection string")
    kafka_bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers")
    topic: str = Field(default="tripclick_raw_logs", description="topic of raw click records")
    lake_uri: str | None = Field(default=None, description="lake root (folder or s3://…)")

    # Embedded broker: "auto" = Apache Kafka when Java ≥ 17 is present, else tansu.
    broker: Literal["auto", "kafka", "tansu"] = "auto"
    brokers: int | None = Field(default=None, ge=1, le=9, description="embedded Kafka brokers")
    # Secured cluster connections, passed to every Kafka client (see messaging/config.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT",
                                     "SASL_SSL"] | None = None
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None  # read when no password is set
    kafka_ssl_ca_file: Path | None = None

    # Topic administration (ingestion issue).
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication: int | None = Field(default=None, ge=1, description="default min(3, brokers)")
    topic_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)

    # The read-only role dashboards use: its password, else one generated under home.
    reader_password: SecretStr | None = None
    # Its name; default derived from the database's (`tripflow_reader` for `tripflow`).
    reader_role: str | None = Field(default=None, min_length=1,
                                    description="read-only role of this database")
    # tripflow_daily's freshness check fails when the hot marts lag more than this.
    freshness_sla_seconds: float = Field(default=900.0, gt=0)
    # Prometheus metrics of the long-running workers and `tripflow metrics` (None: off).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Slack-compatible incoming webhook for failed checks and a breached freshness SLA
    # (a secret: never printed).
    alert_webhook: SecretStr | None = None

    # Change data capture of catalog.documents (tripflow.cdc): Debezium's topic prefix
    # (topic `<prefix>.catalog.documents`) and the replication role's password (else one
    # generated under home).
    cdc_topic_prefix: str = Field(default="tripflow", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    cdc_password: SecretStr | None = None

    # The batch engine of silver, marts and backfill (a command's --engine overrides it),
    # Spark's master (`spark://host:7077`, `yarn`, `k8s://…` in a cluster) and extra Spark
    # settings: `key=value,key2=value2`, or the path of a file of `key value` lines.
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = Field(default="local[2]", min_length=1)
    spark_conf: str | None = None

    # Port of the embedded PostgreSQL/broker when first started (0 = any free port).
    pg_port: int = 0
    broker_port: int = 0

    @field_validator("reader_role")
    @classmethod
    def _role_fits(cls, value: str | None) -> str | None:
        # PostgreSQL would silently cut a longer name to 63 bytes.
        if value is not None and len(value.encode()) > 63:
            raise ValueError("TRIPFLOW_READER_ROLE is longer than PostgreSQL's 63 bytes")
        return value

    @cached_property
    def home_dir(self) -> Path:
        """Absolute TRIPFLOW_HOME, created on first use."""
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def lake(self) -> str:
        """Lake root: TRIPFLOW_LAKE_URI, else $TRIPFLOW_HOME/lake."""
        return self.lake_uri or str(self.home_dir / "lake")


def get_settings() -> Settings:
    return Settings()
