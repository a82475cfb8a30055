"""Change data capture tests: each test's own catalogue prefix, and its replication slot
dropped before its database is (a database with a slot cannot be dropped)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tripflow.db import database_of
from tripflow.settings import Settings


@pytest.fixture
def cdc_settings(settings: Settings, test_id: str, pg_dsn: str) -> Iterator[Settings]:
    yield settings.model_copy(update={"cdc_topic_prefix": f"cdc_{test_id}"})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                     "where database = %s and not active", (database_of(pg_dsn),))


@pytest.fixture
def cdc_env(tripflow_env: dict[str, str], cdc_settings: Settings) -> dict[str, str]:
    return {**tripflow_env, "TRIPFLOW_CDC_TOPIC_PREFIX": cdc_settings.cdc_topic_prefix}
