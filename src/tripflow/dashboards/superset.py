"""A local Apache Superset for the dashboards: its virtualenv, configuration, metadata
database, admin user, bundle import and web server, all under TRIPFLOW_HOME.

Superset's dependency tree is not tripflow's, so it lives in a virtualenv of its own
(`$TRIPFLOW_HOME/superset-venv`, or TRIPFLOW_SUPERSET_VENV so the tests and `make demo`
can share one install) and tripflow drives it through commands and a small task script
(`superset_tasks.py`) run by that virtualenv's Python.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from tripflow.services.procs import pid_alive, read_json, write_json, write_secret
from tripflow.settings import Settings

SUPERSET_VERSION = "6.1.0"
# The recipe tripflow is tested with, every version pinned. rich and cachetools are
# imported by parts of Superset 6.1 (its CLI, some engine specs) that do not require them.
REQUIREMENTS = (
    f"apache-superset=={SUPERSET_VERSION}",
    "flask-caching==2.3.1",
    "rich==15.0.0",
    "cachetools==8.0.1",
    "psycopg2-binary==2.9.13",
)
STAMP_NAME = ".tripflow-installed"
ADMIN_USER = "admin"
HOST = "127.0.0.1"
TASKS_SCRIPT = Path(__file__).with_name("superset_tasks.py")

console = Console(highlight=False)


class SupersetError(RuntimeError):
    """Superset could not be installed, set up or started; the message says what to do."""


class SupersetSettings(BaseSettings):
    """TRIPFLOW_SUPERSET_* settings (kept apart from tripflow's core settings)."""

    model_config = SettingsConfigDict(env_prefix="TRIPFLOW_SUPERSET_", extra="ignore")

    venv: Path | None = Field(default=None, description="Superset's virtualenv "
                              "(default $TRIPFLOW_HOME/superset-venv)")
    port: int = Field(default=8088, ge=1, le=65535, description="port of the web server")


@dataclass(frozen=True)
class SupersetPaths:
    home: Path
    venv: Path

    @classmethod
    def of(cls, settings: Settings) -> SupersetPaths:
        venv = SupersetSettings().venv
        home = settings.home_dir
        return cls(home, (venv.expanduser().resolve() if venv else home / "superset-venv"))

    @property
    def dir(self) -> Path:
        return self.home / "superset"

    @property
    def config(self) -> Path:
        return self.dir / "superset_config.py"

    @property
    def secret_key(self) -> Path:
        return self.dir / "secret_key"

    @property
    def metadata_db(self) -> Path:
        return self.dir / "superset.db"

    @property
    def initialised(self) -> Path:
        return self.dir / ".initialised"

    @property
    def admin_password(self) -> Path:
        return self.home / "superset_admin_password"

    @property
    def bundle(self) -> Path:
        return self.dir / "tripflow_dashboards.zip"

    @property
    def state_file(self) -> Path:
        return self.dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "superset.log"

    @property
    def stamp(self) -> Path:
        return self.venv / STAMP_NAME

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


# --- install ---------------------------------------------------------------------------


def installed(paths: SupersetPaths) -> bool:
    """True when the venv holds exactly this recipe (a changed pin reinstalls)."""
    try:
        recipe = paths.stamp.read_text().split()
    except OSError:
        return False
    return recipe == list(REQUIREMENTS) and paths.bin("superset").exists()


def install(paths: SupersetPaths) -> bool:
    """Create Superset's virtualenv with the pinned recipe unless it exists. True when it
    was installed now."""
    if installed(paths):
        _hide_from_git(paths.venv)
        return False
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"Installing Superset {SUPERSET_VERSION} into {paths.venv} "
                  "(first run only; a few minutes)…")
    if not paths.bin("python").exists():
        _run_logged([sys.executable, "-m", "venv", str(paths.venv)], paths, "create venv")
    _hide_from_git(paths.venv)
    _run_logged([str(paths.bin("python")), "-m", "pip", "install", "--progress-bar", "off",
                 "--disable-pip-version-check", *REQUIREMENTS], paths, "pip install",
                timeout=1800, env=_env(paths))
    paths.stamp.write_text(" ".join(REQUIREMENTS) + "\n")
    console.print(f"[green]✓[/] Superset {SUPERSET_VERSION} installed")
    return True


def _hide_from_git(venv: Path) -> None:
    """A `*` .gitignore inside the venv (as Python 3.13's venv writes): git and ruff, which
    honours .gitignore, then skip it even inside the work tree (`.venv-superset`)."""
    ignore = venv / ".gitignore"
    if venv.exists() and not ignore.exists():
        ignore.write_text("# Created by tripflow: a virtualenv, not source.\n*\n")


def _run_logged(cmd: list[str], paths: SupersetPaths, what: str, timeout: float = 600,
                env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """Run a command, its output appended to the Superset log, showing its latest line as
    progress. Returns the output; raises SupersetError with the log's tail on failure."""
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with paths.log_file.open("a") as log, console.status(f"{what}…") as status:
        log.write(f"\n$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin is not None else
                                subprocess.DEVNULL, text=True, env=env)
        watchdog = threading.Timer(timeout, proc.kill)  # a hung step fails, not hangs
        watchdog.start()
        try:
            if stdin is not None:
                assert proc.stdin is not None
                proc.stdin.write(stdin)
                proc.stdin.close()
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                text = line.strip()
                if text.startswith(("Collecting", "Installing", "Running", "INFO")):
                    status.update(f"{what}: {text[:90]}")
            code = proc.wait()
        finally:
            watchdog.cancel()
    if code != 0:
        tail = "".join(lines[-15:])
        raise SupersetError(f"{what} failed (exit {code}); see {paths.log_file}:\n{tail}")
    return "".join(lines)


# --- configuration and metadata database --------------------------------------------------

_CONFIG = '''\
# Generated by tripflow (`tripflow dashboards serve`) and rewritten on every run: edit
# tripflow/dashboards/superset.py instead. The secret key lives in its own 0600 file.
from pathlib import Path

SECRET_KEY = Path({secret_key!r}).read_text().strip()
SQLALCHEMY_DATABASE_URI = {metadata_uri!r}
DATA_DIR = {data_dir!r}

# One local server on {host}: in-process caches. Chart results are cached briefly (the
# datasets set shorter timeouts for the hot marts).
CACHE_CONFIG = {{"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}}
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 60}}
RATELIMIT_STORAGE_URI = "memory://"

# Plain HTTP on the loopback interface: no HTTPS redirect or secure-only cookies; the
# content security policy and CSRF protection stay on.
TALISMAN_CONFIG = {{
    "content_security_policy": {{
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    }},
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}}
SCARF_ANALYTICS = False
SUPERSET_WEBSERVER_TIMEOUT = 120
'''


def write_config(paths: SupersetPaths) -> None:
    # Owner-only folder: the metadata database holds the reader's password (encrypted with
    # the secret key beside it) and the admin's password hash.
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.dir.chmod(0o700)
    if not paths.secret_key.exists():
        write_secret(paths.secret_key, secrets.token_urlsafe(48))
    text = _CONFIG.format(secret_key=str(paths.secret_key), host=HOST,
                          metadata_uri=f"sqlite:///{paths.metadata_db}",
                          data_dir=str(paths.dir / "data"))
    if not paths.config.exists() or paths.config.read_text() != text:
        write_secret(paths.config, text.rstrip("\n"))


def _env(paths: SupersetPaths) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIPFLOW_", "PYTHON"))}
    env.update({"SUPERSET_CONFIG_PATH": str(paths.config), "SUPERSET_HOME": str(paths.dir),
                "FLASK_APP": "superset.app:create_app()", "PYTHONUNBUFFERED": "1"})
    return env


def initialise(paths: SupersetPaths) -> bool:
    """Create or upgrade Superset's metadata database (once per Superset version)."""
    marker = f"{SUPERSET_VERSION} {paths.metadata_db}"
    if (paths.initialised.exists() and paths.metadata_db.exists()
            and paths.initialised.read_text().strip() == marker):
        return False
    superset = str(paths.bin("superset"))
    _run_logged([superset, "db", "upgrade"], paths, "Superset: metadata database",
                env=_env(paths))
    _run_logged([superset, "init"], paths, "Superset: roles and permissions", env=_env(paths))
    paths.initialised.write_text(marker + "\n")
    return True


def admin_password(paths: SupersetPaths) -> tuple[str, bool]:
    """The admin's password (generated once, 0600) and whether it is new."""
    if paths.admin_password.exists():
        return paths.admin_password.read_text().strip(), False
    password = secrets.token_urlsafe(18)
    write_secret(paths.admin_password, password)
    return password, True


def run_tasks(paths: SupersetPaths, request: dict[str, Any], what: str) -> dict[str, Any]:
    """Run superset_tasks.py in Superset's virtualenv; secrets go over stdin."""
    # -I: not the script's folder first on sys.path (its superset.py would shadow Superset).
    output = _run_logged([str(paths.bin("python")), "-I", str(TASKS_SCRIPT)], paths, what,
                         env=_env(paths), stdin=json.dumps(request))
    for line in reversed(output.splitlines()):
        if line.startswith("TRIPFLOW-RESULT "):
            return json.loads(line.removeprefix("TRIPFLOW-RESULT "))
    raise SupersetError(f"{what}: no result; see {paths.log_file}")


# --- web server ---------------------------------------------------------------------------


def _state(paths: SupersetPaths) -> dict[str, Any] | None:
    state = read_json(paths.state_file)
    if state and pid_alive(state.get("pid"), "gunicorn"):
        return state
    return None


def answers(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def running_url(paths: SupersetPaths) -> str | None:
    """The URL of this home's Superset when it runs and answers."""
    state = _state(paths)
    if state:
        url = f"http://{HOST}:{state['port']}"
        if answers(url):
            return url
    return None


def start(paths: SupersetPaths, port: int, *, background: bool = True,
          wait_s: float = 180.0, on_ready: Callable[[str], None] | None = None) -> str:
    """Start the web server (gunicorn) on HOST:port; returns its URL once it answers.

    In the background it is a detached process (its own session, PID in server.json) that
    outlives the command; in the foreground this call serves until interrupted, after
    calling `on_ready(url)`. A server of this home that already answers is reused."""
    url = running_url(paths)
    if url:
        if on_ready:
            on_ready(url)
        return url
    if _state(paths):  # alive but not answering: ours and hung
        stop(paths)
    if _listening(port):
        raise SupersetError(f"port {port} on {HOST} is in use; choose another with --port "
                            "or TRIPFLOW_SUPERSET_PORT")
    cmd = [str(paths.bin("gunicorn")), "--bind", f"{HOST}:{port}", "--workers", "1",
           "--worker-class", "gthread", "--threads", "8", "--timeout", "120",
           "--limit-request-line", "0", "--limit-request-field_size", "0",
           "superset.app:create_app()"]
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with paths.log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env(paths),
                                start_new_session=background)
    write_json(paths.state_file, {"pid": proc.pid, "port": port})
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + wait_s
    with console.status(f"Starting Superset on {url}…"):
        while not answers(url, timeout=2.0):
            if proc.poll() is not None:
                raise SupersetError(f"Superset exited at start (code {proc.returncode}); "
                                    f"see {paths.log_file}")
            if time.monotonic() > deadline:
                stop(paths)
                raise SupersetError(f"Superset did not answer on {url} within "
                                    f"{wait_s:.0f} s; see {paths.log_file}")
            time.sleep(1.0)
    if on_ready:
        on_ready(url)
    if not background:
        _serve_foreground(proc, url, paths)
    return url


def _listening(port: int) -> bool:
    """True when something accepts connections on HOST:port. (A bind test would also
    refuse a port whose last connections linger in TIME_WAIT, as after a restart.)"""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((HOST, port)) == 0


def _serve_foreground(proc: subprocess.Popen[bytes], url: str, paths: SupersetPaths) -> None:
    console.print(f"Superset serves {url} in the foreground; Ctrl-C stops it.")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        paths.state_file.unlink(missing_ok=True)


def stop(paths: SupersetPaths) -> bool:
    """Stop this home's Superset (its gunicorn process group). True when one ran."""
    state = _state(paths)
    if not state:
        paths.state_file.unlink(missing_ok=True)
        return False
    pid = int(state["pid"])
    _signal(pid, signal.SIGTERM)  # gunicorn's master stops its workers, then itself
    for _ in range(100):
        if not pid_alive(pid, "gunicorn"):
            break
        time.sleep(0.2)
    else:
        _signal(pid, signal.SIGKILL)
    paths.state_file.unlink(missing_ok=True)
    return True


def _signal(pid: int, sig: int) -> None:
    """Signal the server: its whole process group when it leads one (the background
    server does, having its own session), else the master alone."""
    with suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)

