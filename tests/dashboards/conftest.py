"""Fixtures of the dashboard tests: one tripflow (own database and home) filled with
generated data, and one Superset serving its dashboards, per test module.

Superset comes from the virtualenv `make superset-venv` builds (`.venv-superset`, or
TRIPFLOW_SUPERSET_VENV); the browser is Debian's chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tripflow import dashboards, db
from tripflow.dashboards import superset
from tripflow.services import Endpoints
from tripflow.services.procs import free_port
from tripflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
START = date(2016, 3, 7)
DAYS = 3
PIPELINE = ("generate", "produce", "stream", "bronze", "silver", "marts")


def superset_venv() -> Path:
    venv = Path(os.environ.get("TRIPFLOW_SUPERSET_VENV", ROOT / ".venv-superset"))
    if not superset.installed(superset.SupersetPaths(Path("/nonexistent"), venv)):
        pytest.fail(f"no Superset virtualenv at {venv}: run `make superset-venv`")
    return venv


def _load_fill() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_fill", Path(__file__).with_name(
        "fill.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline_commands() -> set[str]:
    from tripflow.cli.main import app

    names = {c.name or (c.callback.__name__ if c.callback else "") for c in
             app.registered_commands}
    return names | {g.name or "" for g in app.registered_groups}


def _cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
    env.update({"TRIPFLOW_HOME": str(settings.home), "TRIPFLOW_PG_DSN": settings.pg_dsn or "",
                "TRIPFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
                "TRIPFLOW_TOPIC": settings.topic, "TRIPFLOW_LAKE_URI": settings.lake,
                "TRIPFLOW_CDC_TOPIC_PREFIX": settings.topic,
                "TRIPFLOW_SUPERSET_VENV": os.environ["TRIPFLOW_SUPERSET_VENV"]})
    if "PYTHONPATH" not in env and not (ROOT / ".venv").exists():
        env["PYTHONPATH"] = str(ROOT / "src")
    return env


def run_tripflow(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    """The real `tripflow` command (installed script, else the module)."""
    script = shutil.which("tripflow", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "tripflow"]
    result = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"tripflow {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result.stdout


def fill_by_pipeline(settings: Settings, work: Path) -> str:
    """Generated day files through the real pipeline: topic → hot path and bronze →
    silver → cold marts. Returns a description for the test log."""
    env = _cli_env(settings)
    files = work / "days"
    run_tripflow("generate", "--out", str(files), "--start", START.isoformat(), "--days",
                 str(DAYS), "--seed", "7", "--sessions-per-day", "300", "--bots", "2",
                 "--bad-rate", "0.002", env=env)  # bad lines: "Pipeline health" quarantine
    day_files = sorted(str(p) for p in files.glob("[0-9]*.json"))
    run_tripflow("produce", *day_files, env=env)
    run_tripflow("stream", "--until-idle", "5", env=env)
    run_tripflow("bronze", "--until-idle", "5", env=env)
    run_tripflow("silver", env=env)
    run_tripflow("marts", env=env)
    # The catalogue through change data capture: mart_catalog_changes (its snapshot).
    run_tripflow("articles", str(files / "allarticles.txt"), env=env)
    run_tripflow("cdc", "capture", "--until-idle", "3", env=env)
    run_tripflow("cdc", "apply", "--until-idle", "3", env=env)
    run_tripflow("metrics", "--once", env=env)  # a consumer-lag sample
    return (f"pipeline: generate {DAYS} days → produce → stream/bronze → silver → marts; "
            "articles → cdc capture → cdc apply")


def fill_directly(settings: Settings) -> str:
    from tests.observability.health_fill import fill_health

    clicks = _load_fill().fill_marts(db.prepare(settings), start=START, days=7)
    fill_health(db.prepare(settings))
    return f"direct inserts of {clicks} synthetic clicks (TRIPFLOW_DASHBOARD_FILL=direct)"


@pytest.fixture(scope="module")
def dash_settings(endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Settings]:
    """An isolated tripflow (own database, home, topic and lake) for one test module."""
    venv = superset_venv()
    name = f"t_dash_{os.urandom(4).hex()}"
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, _ = endpoints.pg_dsn.rpartition("/")
    work = tmp_path_factory.mktemp("dashboards")
    (work / "lake").mkdir()
    settings = Settings(home=work / "home", pg_dsn=f"{base}/{name}",
                        kafka_bootstrap=endpoints.kafka_bootstrap, topic=f"dash_{name}",
                        lake_uri=str(work / "lake"))
    saved = os.environ.get("TRIPFLOW_SUPERSET_VENV")
    os.environ["TRIPFLOW_SUPERSET_VENV"] = str(venv)
    db.prepare(settings)
    yield settings
    if saved is None:
        os.environ.pop("TRIPFLOW_SUPERSET_VENV", None)
    else:
        os.environ["TRIPFLOW_SUPERSET_VENV"] = saved
    with psycopg.connect(endpoints.pg_dsn, autocommit=True) as conn:
        # The catalogue's capture slot (fill_by_pipeline) would keep the database.
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                     "where database = %s and not active", (name,))
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def filled(dash_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Fill the marts by the real pipeline; TRIPFLOW_DASHBOARD_FILL=direct writes
    consistent synthetic mart rows instead (quicker, for work on the dashboards alone)."""
    began = time.monotonic()
    if os.environ.get("TRIPFLOW_DASHBOARD_FILL") == "direct":
        how = fill_directly(dash_settings)
    else:
        missing = set(PIPELINE) - pipeline_commands()
        assert not missing, f"pipeline commands missing: {sorted(missing)}"
        how = fill_by_pipeline(dash_settings, tmp_path_factory.mktemp("pipeline"))
    print(f"\nmarts filled by {how} in {time.monotonic() - began:.0f} s")
    return how


@pytest.fixture(scope="module")
def served(dash_settings: Settings, filled: str) -> Iterator[dashboards.ServeResult]:
    """A fresh Superset (new metadata database) serving the imported dashboards."""
    result = dashboards.serve_info(dash_settings, port=free_port(), background=True)
    yield result
    dashboards.stop(dash_settings)


class Api:
    """Superset's REST API as the admin (bearer token)."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        token = self.call("POST", "/api/v1/security/login",
                          {"username": superset.ADMIN_USER, "password": password,
                           "provider": "db", "refresh": False})["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**getattr(self, "headers", {})}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read()[:2000]!r}") from err


@pytest.fixture(scope="module")
def api(served: dashboards.ServeResult) -> Api:
    return Api(served.url, served.password_file.read_text().strip())


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser test saves its PNGs: TRIPFLOW_SCREENSHOTS, else a temp folder."""
    configured = os.environ.get("TRIPFLOW_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path

