"""PostgreSQL access: versioned migrations, the reader role's password, connections.

Migrations are the numbered `.sql` files in `migrations/`, applied in order, each in its
own transaction and recorded in `tripflow.schema_migrations`; applying twice is a no-op.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from tripflow import services
from tripflow.services.procs import write_secret
from tripflow.settings import Settings

READER_ROLE = "tripflow_reader"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Serialises concurrent `migrate` calls (several workers starting at once).
_MIGRATION_LOCK = 7_312_645_001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """All migration files, in version order."""
    folder = resources.files("tripflow.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version number: {versions}")
    return found


def migrate(dsn: str) -> list[str]:
    """Apply the migrations this database lacks. Returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The superuser may be named like the `tripflow` schema ("$user" comes first in
        # the default search_path): pin marts to `public`.
        conn.execute("set search_path to public")
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("create schema if not exists tripflow")
            conn.execute(
                """create table if not exists tripflow.schema_migrations (
                       version    integer primary key,
                       name       text not null,
                       checksum   text not null,
                       applied_at timestamptz not null default now())"""
            )
            done = {v for (v,) in conn.execute("select version from tripflow.schema_migrations")}
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "insert into tripflow.schema_migrations (version, name, checksum) "
                        "values (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def reader_password(settings: Settings) -> str:
    """The reader role's password: TRIPFLOW_READER_PASSWORD, else generated once and kept
    0600 under TRIPFLOW_HOME."""
    if settings.reader_password:
        return settings.reader_password.get_secret_value()
    path = settings.home_dir / "reader_password"
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def set_reader_password(dsn: str, password: str) -> None:
    # Under the migration lock: two workers starting at once would otherwise collide
    # updating the same role ("tuple concurrently updated").
    with psycopg.connect(dsn) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(READER_ROLE), sql.Literal(password)
            )
        )


_ready: set[str] = set()


def prepare(settings: Settings) -> str:
    """A DSN whose database is up and migrated: what every command that needs PostgreSQL
    calls first. Starts the embedded server when no TRIPFLOW_PG_DSN is set."""
    dsn = services.pg_dsn(settings)
    if dsn not in _ready:
        migrate(dsn)
        set_reader_password(dsn, reader_password(settings))
        _ready.add(dsn)
    return dsn


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    """A connection to the migrated database, marts first on the search path."""
    return psycopg.connect(  # type: ignore[call-overload]
        prepare(settings), options="-c search_path=public", **kwargs
    )
