"""As root, `tripflow services up` runs PostgreSQL as its system user without changing the
owner or mode of anything outside TRIPFLOW_HOME (the folders above it, the virtualenv);
when that user cannot reach TRIPFLOW_HOME, it stops with what to do and changes nothing.
Real processes; only meaningful as root (which CI is)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tripflow.services import postgres

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as "
                                f"the system user {postgres.SYSTEM_USER}")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env["TRIPFLOW_HOME"] = str(home)
    return env


def _outside(home: Path) -> list[Path]:
    """What tripflow must leave alone: every folder above the home, and the wheel's files
    with every folder above them (the virtualenv's site-packages included)."""
    package = postgres._wheel_install().parent
    paths = [*home.parents, *package.parents]
    for root in (package, package.with_name(f"{package.name}.libs")):
        for folder, dirs, files in os.walk(root):
            paths += [Path(folder, name) for name in [".", *dirs, *files]]
    return paths


def _modes(paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    result = {}
    for path in paths:
        st = os.lstat(path)
        result[str(path)] = (st.st_mode, st.st_uid, st.st_gid)
    return result


@pytest.fixture
def parent(tripflow_cli) -> Iterator[Path]:
    """A fresh folder under /tmp to hold TRIPFLOW_HOME (its mode set by the test)."""
    folder = Path(tempfile.mkdtemp(prefix="tripflow-parent-"))
    yield folder
    folder.chmod(0o700)
    tripflow_cli("services", "down", env=_env(folder / "home"), check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("mode", [0o711, 0o755])
def test_up_as_root_changes_no_mode_or_owner_outside_home(parent: Path, mode: int,
                                                          tripflow_cli) -> None:
    parent.chmod(mode)
    home = parent / "home"
    outside = _outside(home)
    before = _modes(outside)
    env = _env(home)

    assert "started: postgresql, broker" in tripflow_cli("services", "up", env=env).stdout
    status = json.loads(tripflow_cli("services", "status", "--json", env=env).stdout)
    with psycopg.connect(status["pg_dsn"]) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    pid = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    assert psutil.Process(pid).username() == postgres.SYSTEM_USER
    # It runs a copy of the programs kept under TRIPFLOW_HOME...
    exe = Path(psutil.Process(pid).exe())
    assert exe.is_relative_to(home / "pginstall"), exe
    (copy,) = (home / "pginstall").iterdir()
    made = (copy / ".complete").stat().st_mtime_ns

    # ...made once: a second start reuses it.
    tripflow_cli("services", "down", env=env)
    assert "started: postgresql" in tripflow_cli("services", "up", env=env).stdout
    assert (copy / ".complete").stat().st_mtime_ns == made

    assert _modes(outside) == before
    assert (parent.stat().st_mode & 0o7777) == mode


def test_up_as_root_under_a_closed_folder_says_what_to_do(parent: Path, tripflow_cli) -> None:
    parent.chmod(0o700)  # e.g. /root: the system user cannot enter it
    home = parent / "home"
    outside = _outside(home)
    before = _modes(outside)

    result = tripflow_cli("services", "up", env=_env(home), check=False)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "Traceback" not in message
    assert f"`{postgres.SYSTEM_USER}` cannot reach TRIPFLOW_HOME {home}" in message
    assert f"may not enter {parent}" in message
    for advice in ("set TRIPFLOW_HOME to a folder", "/var/tmp/tripflow", "non-root user",
                   "TRIPFLOW_PG_DSN"):
        assert advice in message
    assert _modes(outside) == before
    assert not (home / "pg").exists() and not (home / "pginstall").exists()
