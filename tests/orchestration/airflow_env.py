"""Where the Airflow virtualenv is (built by `make airflow-venv`, which `make test` runs)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def airflow_bin() -> Path:
    venv = Path(os.environ.get("TRIPFLOW_AIRFLOW_VENV", ROOT / ".venv-airflow"))
    path = venv / "bin"
    if not (path / "airflow").exists():
        raise AssertionError(f"no Airflow virtualenv at {venv}: run `make airflow-venv`")
    return path
