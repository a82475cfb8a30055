"""The embedded PostgreSQL runs with wal_level=logical, and `start` restarts a server that
runs without it (one started by a tripflow older than change data capture)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg

from tripflow.services import postgres


def test_start_restarts_a_server_without_logical_wal() -> None:
    # Outside pytest's temp folder: the PostgreSQL system user must reach it (conftest).
    home = Path(tempfile.mkdtemp(prefix="tripflow-wal-"))
    paths = postgres.PgPaths(home)
    try:
        assert postgres.start(paths)
        assert postgres.wal_level(paths) == "logical"
        # An older server: its wal_level was `replica` when it started.
        url = postgres.dsn(paths, "postgres")
        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("alter system set wal_level = 'replica'")
        postgres.stop(paths)
        postgres.start(paths)
        assert postgres.wal_level(paths) == "replica"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("alter system reset wal_level")
        # Running, answering, but not logical: start() restarts it, on the same port.
        pid = postgres.postmaster_pid(paths)
        assert postgres.start(paths)
        assert postgres.wal_level(paths) == "logical"
        assert postgres.postmaster_pid(paths) != pid
        assert postgres.dsn(paths, "postgres") == url
        assert not postgres.start(paths)  # logical already: nothing to do
    finally:
        postgres.stop(paths)
        shutil.rmtree(home, ignore_errors=True)
