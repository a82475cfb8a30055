"""What `tripflow demo` starts for the catalogue (capture, apply, an editor) runs in the
background, shows in `tripflow status` and stops with `tripflow services down`."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from tripflow.services import procs, workers
from tripflow.settings import Settings


def test_demo_workers_flow_show_in_status_and_stop(
        cdc_settings: Settings, cdc_env: dict[str, str], pg_dsn: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in cdc_env.items():
        if key.startswith("TRIPFLOW_"):
            monkeypatch.setenv(key, value)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("insert into catalog.documents (document_id, title, url) "
                     "select g, 'Document ' || g, null from generate_series(1, 20) g")
    home = cdc_settings.home_dir
    assert workers.start_cdc(home, editor=True) == {
        "cdc-capture": True, "cdc-apply": True, "catalog-editor": True}
    assert workers.start_cdc(home) == {"cdc-capture": False, "cdc-apply": False}
    pids = [procs.read_json(home / "run" / f"{name}.json")["pid"]
            for name in ("cdc-capture", "cdc-apply", "catalog-editor")]

    def applied() -> int:
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute("select count(*) from tripflow.cdc_changes where op <> 'r'"
                               ).fetchone()
        return row[0] if row else 0

    deadline = time.monotonic() + 90
    while applied() < 2:  # the editor's changes (0.5/s) reach the dimension
        assert time.monotonic() < deadline, (home / "logs" / "cdc-capture.log").read_text()
        time.sleep(0.5)
    shown = subprocess.run([sys.executable, "-m", "tripflow", "status"], env=cdc_env,
                           capture_output=True, text=True, timeout=120).stdout
    assert "(reading) → " in shown and "changes applied" in shown, shown
    down = subprocess.run([sys.executable, "-m", "tripflow", "services", "down"], env=cdc_env,
                          capture_output=True, text=True, timeout=120)
    assert "catalog-editor, cdc-apply, cdc-capture" in down.stdout, down.stdout + down.stderr
    assert not any(procs.pid_alive(pid, "tripflow") for pid in pids)
    assert workers.names(home) == []
