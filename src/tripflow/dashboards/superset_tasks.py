"""Tasks run by the Python of Superset's own virtualenv (never imported by tripflow).

    python superset_tasks.py    stdin: {"admin": {"username": ..., "password": ...},
                                        "import": {"bundle": PATH, "username": ...,
                                                   "passwords": {FILE: PASSWORD}}}

Either key may be left out; both run in one Superset app (its start-up is the slow part).

Secrets come on standard input, so they never show in a process list. The import uses
Superset's "assets" import: databases, datasets, charts and dashboards are all overwritten
by UUID, so importing again updates them instead of adding copies.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _app() -> Any:
    from superset.app import create_app

    return create_app()


def admin(request: dict[str, str]) -> dict[str, Any]:
    """Create the admin user, or reset its password when it exists."""
    from superset import db, security_manager

    username, password = request["username"], request["password"]
    user = security_manager.find_user(username=username)
    if user is None:
        role = security_manager.find_role("Admin")
        user = security_manager.add_user(username, "tripflow", "admin",
                                         f"{username}@localhost", role, password=password)
        if not user:
            raise SystemExit(f"could not create the Superset user {username}")
        created = True
    else:
        security_manager.reset_password(user.id, password)
        created = False
    db.session.commit()
    return {"username": username, "created": created}


def import_bundle(request: dict[str, Any]) -> dict[str, Any]:
    from zipfile import ZipFile

    from superset import db, security_manager
    from superset.commands.importers.v1.assets import ImportAssetsCommand
    from superset.commands.importers.v1.utils import get_contents_from_bundle
    from superset.models.dashboard import Dashboard
    from superset.models.slice import Slice
    from superset.utils.core import override_user

    with ZipFile(request["bundle"]) as bundle:
        contents = get_contents_from_bundle(bundle)
    user = security_manager.find_user(username=request.get("username", "admin"))
    with override_user(user):
        ImportAssetsCommand(contents, passwords=request["passwords"]).run()
    db.session.commit()
    return {
        "dashboards": {d.dashboard_title: d.id for d in db.session.query(Dashboard).all()},
        "charts": db.session.query(Slice).count(),
    }


def main() -> None:
    request = json.loads(sys.stdin.read())
    result: dict[str, Any] = {}
    with _app().app_context():
        if "admin" in request:
            result["admin"] = admin(request["admin"])
        if "import" in request:
            result["import"] = import_bundle(request["import"])
    # One marked line, so tripflow can find the result among Superset's log lines.
    print("TRIPFLOW-RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
