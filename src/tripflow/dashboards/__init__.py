"""Dashboards as code: Superset dashboards generated from Python, imported, served.

    build_bundle(settings, out)  write the import bundle (zip of YAML) and return its path
    serve(settings, port=...)    install/initialise Superset if needed, import, serve; URL
    import_bundle(settings)      rebuild the bundle and import it (into a running one too)
    stop(settings)               stop this home's Superset
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripflow import db, services
from tripflow.dashboards import bundle as _bundle
from tripflow.dashboards import catalog
from tripflow.dashboards import superset as _superset
from tripflow.dashboards.superset import SupersetError, SupersetPaths, SupersetSettings
from tripflow.settings import Settings

__all__ = ["ServeResult", "SupersetError", "build_bundle", "import_bundle",
           "print_where_to_look", "serve", "serve_info", "status", "stop"]


def build_bundle(settings: Settings, out: Path | None = None) -> Path:
    """Write the Superset import bundle for this tripflow's database; returns its path
    (default $TRIPFLOW_HOME/superset/tripflow_dashboards.zip). It holds no password."""
    target = out or SupersetPaths.of(settings).bundle
    dsn = services.pg_dsn(settings)
    uri = _bundle.reader_uri(dsn, db.reader_role(settings, dsn))
    return _bundle.write_bundle(_bundle.bundle_files(uri), Path(target))


@contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """One setup/import at a time per TRIPFLOW_HOME (two `serve`s may race otherwise)."""
    with (settings.home_dir / "superset.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepared(settings: Settings) -> SupersetPaths:
    paths = SupersetPaths.of(settings)
    _superset.install(paths)
    _superset.write_config(paths)
    _superset.initialise(paths)
    return paths


def import_bundle(settings: Settings) -> dict[str, Any]:
    """Build the bundle and import it into this home's Superset (running or not), with the
    reader's password filled in at import time. Returns {"dashboards": {title: id}, ...}."""
    paths = SupersetPaths.of(settings)
    if not _superset.installed(paths) or not paths.initialised.exists():
        raise SupersetError("Superset is not set up here yet; run `tripflow dashboards serve`")
    with _lock(settings):
        return _import(settings, _prepared(settings), new_admin=None)


def _import(settings: Settings, paths: SupersetPaths, new_admin: str | None) -> dict[str, Any]:
    """Import the bundle (and create or update the admin first when `new_admin` is set)."""
    dsn = db.prepare(settings)  # migrated, and the reader can log in with its password
    path = build_bundle(settings, paths.bundle)
    request: dict[str, Any] = {
        "import": {"bundle": str(path), "username": _superset.ADMIN_USER,
                   "passwords": {_bundle.DATABASE_FILE: db.reader_password(settings, dsn)}},
    }
    if new_admin is not None:
        request["admin"] = {"username": _superset.ADMIN_USER, "password": new_admin}
    result = _superset.run_tasks(paths, request, "Superset: importing the dashboards")
    return {**result["import"], "database": _bundle.reader_uri(dsn, db.reader_role(settings, dsn)),
            "admin_created": result.get("admin", {}).get("created", False)}


@dataclass(frozen=True)
class ServeResult:
    url: str
    password_file: Path
    new_password: str | None  # set only when the admin was created now (printed once)
    dashboards: dict[str, int]

    def dashboard_urls(self) -> dict[str, str]:
        """Title → URL, in the catalog's order (the slugs are stable across imports)."""
        return {d.title: f"{self.url}/superset/dashboard/{d.slug}/"
                for d in catalog.dashboards() if d.title in self.dashboards}


def serve_info(settings: Settings, port: int | None = None, background: bool = True,
               on_ready: Callable[[ServeResult], None] | None = None) -> ServeResult:
    """`serve`, returning everything the command line shows; `on_ready` gets the same as
    soon as Superset answers (in the foreground, before serving until interrupted)."""
    port = port or SupersetSettings().port
    with _lock(settings):
        paths = _prepared(settings)
        password, _ = _superset.admin_password(paths)
        # The admin task runs on every serve: cheap, and it repairs a metadata database
        # that was recreated while the password file stayed.
        imported = _import(settings, paths, new_admin=password)

        def result(url: str) -> ServeResult:
            return ServeResult(url, paths.admin_password,
                               password if imported["admin_created"] else None,
                               imported["dashboards"])

        ready = (lambda url: on_ready(result(url))) if on_ready else None
        if background:  # started under the lock, so two `serve`s never start two servers
            return result(_superset.start(paths, port, background=True, on_ready=ready))
    return result(_superset.start(paths, port, background=False, on_ready=ready))


def serve(settings: Settings, port: int | None = None, background: bool = True) -> str:
    """Install Superset if missing, initialise it, create the admin, import the dashboards
    and serve them on 127.0.0.1; prints where to look (and the admin password, the one
    time it is created) and returns the URL. A second call reuses all of it and re-imports,
    so the dashboards follow the code."""
    return serve_info(settings, port, background, on_ready=print_where_to_look).url


def print_where_to_look(result: ServeResult) -> None:
    console = _superset.console
    console.rule("dashboards")
    for title, url in result.dashboard_urls().items():
        console.print(f"{title:<18} {url}", soft_wrap=True)
    console.print(f"Superset  : {result.url}  (user {_superset.ADMIN_USER}, password in "
                  f"{result.password_file}, mode 0600)", soft_wrap=True)
    if result.new_password:
        console.print(f"Admin password (shown once): [bold]{result.new_password}[/]")
    console.print("Stop it with `tripflow dashboards stop`.")


def stop(settings: Settings) -> bool:
    """Stop this home's Superset. True when one was running."""
    return _superset.stop(SupersetPaths.of(settings))


def status(settings: Settings) -> str | None:
    """The URL of this home's Superset when it runs and answers, else None."""
    return _superset.running_url(SupersetPaths.of(settings))
