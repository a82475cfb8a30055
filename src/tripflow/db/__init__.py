"""PostgreSQL access: versioned migrations, the reader role and its password, connections.

Migrations are the numbered `.sql` files in `migrations/`, applied in order, each in its
own transaction and recorded in `tripflow.schema_migrations`; applying twice is a no-op.

The read-only role belongs to one database (roles are server-wide, databases are not):
`tripflow_reader` for the database named `tripflow`, `tripflow_reader_<database>` for any
other (see `reader_role_for`), or TRIPFLOW_READER_ROLE. The migration files grant to
`tripflow_reader` (what they always did); in a database whose reader is another role,
`migrate` moves those grants to that role in the same transaction, so `tripflow_reader`
never holds anything there, and the role another database uses is never touched.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tripflow import services
from tripflow.db import sqlfiles
from tripflow.services.procs import write_secret
from tripflow.settings import Settings

# The reader of the database named `tripflow` (the embedded default), and the role every
# migration file grants to.
READER_ROLE = "tripflow_reader"
DEFAULT_DATABASE = "tripflow"
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SQL = sqlfiles.queries("db", "catalog.sql")
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


def database_of(dsn: str) -> str:
    """The database a DSN names; without one, libpq's default (PGDATABASE, else the user)."""
    info = conninfo_to_dict(dsn)
    return str(info.get("dbname") or os.environ.get("PGDATABASE")
               or info.get("user") or os.environ.get("PGUSER") or getpass.getuser())


def reader_role_for(database: str) -> str:
    """The read-only role of `database`: `tripflow_reader` for `tripflow` (as before, so
    existing installs keep their role), else `tripflow_reader_<database>`; a name that is
    not plain lower-case ASCII, or too long, is slugged and suffixed with a hash of the
    exact name, so the role is always a safe identifier of at most 63 bytes and two
    databases never get the same one."""
    if database == DEFAULT_DATABASE:
        return READER_ROLE
    slug = re.sub(r"[^a-z0-9_]+", "_", database.lower())
    name = f"{READER_ROLE}_{slug}"
    if slug != database or len(name) > _MAX_IDENTIFIER:
        digest = hashlib.sha256(database.encode()).hexdigest()[:8]
        name = f"{READER_ROLE}_{slug[:_MAX_IDENTIFIER - len(READER_ROLE) - 10]}_{digest}"
    return name


def reader_role(settings: Settings, dsn: str | None = None) -> str:
    """This tripflow's read-only role: TRIPFLOW_READER_ROLE, else the one of its database
    (TRIPFLOW_PG_DSN's, else the embedded server's `tripflow`)."""
    if settings.reader_role:
        return settings.reader_role
    dsn = dsn or settings.pg_dsn
    return reader_role_for(database_of(dsn) if dsn else DEFAULT_DATABASE)


def migrate(dsn: str, reader: str | None = None) -> list[str]:
    """Apply the migrations this database lacks and make sure its read-only role (`reader`,
    default `reader_role_for` the DSN's database) holds the reader's grants here. Returns
    the names applied now."""
    reader = reader or reader_role_for(database_of(dsn))
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The superuser may be named like the `tripflow` schema ("$user" comes first in
        # the default search_path): pin marts to `public`.
        conn.execute("set search_path to public")
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("create schema if not exists tripflow")
            conn.execute(_SQL["create_migrations"])
            conn.execute(_SQL["create_reader_roles"])
            done = {v for (v,) in conn.execute(_SQL["applied_versions"])}
            _create_reader(conn, reader)
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    _own_reader_grants(conn, reader)
                    conn.execute(_SQL["record_migration"],
                                 (migration.version, migration.name, migration.checksum))
                applied_now.append(migration.name)
            with conn.transaction():  # a database migrated before roles were per database
                _own_reader_grants(conn, reader)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def _create_reader(conn: psycopg.Connection, role: str) -> None:
    """Create the read-only role unless it exists; refuse a role that can do more."""
    row = conn.execute(_SQL["role_powers"], (role,)).fetchone()
    if row is None:
        # Another database's migration may create it at the same moment.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
    elif row[0] or row[1]:
        raise RuntimeError(f"the reader role {role!r} exists and is not a plain read-only "
                           "role: set TRIPFLOW_READER_ROLE to another name")


def _own_reader_grants(conn: psycopg.Connection, role: str) -> None:
    """Make `role` this database's only tripflow reader: let it connect, and move to it
    whatever READER_ROLE (what the migration files grant to) and this database's earlier
    readers (`tripflow.reader_roles`, e.g. before TRIPFLOW_READER_ROLE changed) hold here:
    schema USAGE, table SELECT. Only this database's catalog changes: those roles keep
    what they hold in other databases."""
    target = sql.Identifier(role)
    (database,) = conn.execute("select current_database()").fetchone() or ("",)
    connectable = conn.execute(_SQL["can_connect"], (role,)).fetchone()
    if not (connectable and connectable[0]):  # PUBLIC's CONNECT was revoked here
        conn.execute(sql.SQL("grant connect on database {} to {}").format(
            sql.Identifier(database), target))
    earlier = {r for (r,) in conn.execute(_SQL["earlier_readers"])}
    for source in sorted(({READER_ROLE} | earlier) - {role}):
        _move_grants(conn, source, role, database)
    conn.execute(_SQL["forget_readers"], (role,))
    conn.execute(_SQL["remember_reader"], (role,))


def _move_grants(conn: psycopg.Connection, source: str, role: str, database: str) -> None:
    old, new = sql.Identifier(source), sql.Identifier(role)
    tables = conn.execute(_SQL["table_grants"], (source,)).fetchall()
    for schema, table, privilege in tables:
        conn.execute(sql.SQL("grant {} on table {} to {}").format(
            sql.SQL(privilege), sql.Identifier(schema, table), new))
    for schema, table in sorted({(schema, table) for schema, table, _ in tables}):
        conn.execute(sql.SQL("revoke all on table {} from {}").format(
            sql.Identifier(schema, table), old))
    schemas = conn.execute(_SQL["schema_grants"], (source,)).fetchall()
    for (schema,) in schemas:
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(
            sql.Identifier(schema), new))
        conn.execute(sql.SQL("revoke all on schema {} from {}").format(
            sql.Identifier(schema), old))
    explicit = conn.execute(_SQL["database_grant"], (source,)).fetchone()
    if explicit:
        conn.execute(sql.SQL("revoke all on database {} from {}").format(
            sql.Identifier(database), old))


def _password_file(settings: Settings, role: str) -> Path:
    """Where a generated reader password is kept: one file per role, so two databases
    sharing a TRIPFLOW_HOME never overwrite each other's (`reader_password` for the
    default role, as before)."""
    if role == READER_ROLE:
        return settings.home_dir / "reader_password"
    if not re.fullmatch(r"[A-Za-z0-9_]+", role):
        role = hashlib.sha256(role.encode()).hexdigest()[:16]
    return settings.home_dir / f"reader_password.{role}"


def reader_password(settings: Settings, dsn: str | None = None) -> str:
    """The reader role's password: TRIPFLOW_READER_PASSWORD, else generated once and kept
    0600 under TRIPFLOW_HOME (one file per role)."""
    if settings.reader_password:
        return settings.reader_password.get_secret_value()
    path = _password_file(settings, reader_role(settings, dsn))
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def _known_reader_password(settings: Settings, dsn: str) -> str | None:
    """The reader's password when one was set or generated already (else None)."""
    if settings.reader_password:
        return settings.reader_password.get_secret_value()
    path = _password_file(settings, reader_role(settings, dsn))
    return path.read_text().strip() if path.exists() else None


def set_reader_password(dsn: str, password: str, role: str | None = None) -> None:
    """Let the reader role (`role`, default the DSN's database's) log in with `password`."""
    role = role or reader_role_for(database_of(dsn))
    # Under the migration lock: two workers starting at once would otherwise collide
    # updating the same role ("tuple concurrently updated").
    with psycopg.connect(dsn) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )


def reader_dsn(settings: Settings, dsn: str) -> str | None:
    """The read-only DSN of this tripflow's database (`dsn`'s server and database, the
    reader role and its password): what scripts and BI tools connect with. None before
    the reader has a password (`prepare`, which every command runs, gives it one)."""
    role, password = reader_role(settings, dsn), _known_reader_password(settings, dsn)
    if password is None:
        return None
    if "://" not in dsn:
        return make_conninfo(dsn, user=role, password=password)
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k not in {"user", "password"}])
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_ready: set[tuple[str, str, str]] = set()


def prepare(settings: Settings) -> str:
    """A DSN whose database is up and migrated, and whose reader logs in with its password:
    what every command that needs PostgreSQL calls first. Starts the embedded server when
    no TRIPFLOW_PG_DSN is set."""
    dsn = services.pg_dsn(settings)
    role = reader_role(settings, dsn)
    password = reader_password(settings, dsn)
    if (dsn, role, password) not in _ready:
        migrate(dsn, role)
        set_reader_password(dsn, password, role)
        _ready.add((dsn, role, password))
    return dsn


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    """A connection to the migrated database, marts first on the search path."""
    return psycopg.connect(  # type: ignore[call-overload]
        prepare(settings), options="-c search_path=public", **kwargs
    )
