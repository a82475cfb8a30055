"""The DAGs import in Airflow, have no cycles, and have the expected tasks in order."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from airflow_env import ROOT, airflow_bin

INSPECT = """
import json, warnings
warnings.simplefilter("ignore")
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={folder!r})
out = {{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": {{}}}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {{
        "order": [t.task_id for t in dag.topological_sort()],
        "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "scheduled": type(dag.timetable).__name__,
        "params": sorted(dag.params.keys()),
        "retries": {{t.task_id: t.retries for t in dag.tasks}},
    }}
print("RESULT" + json.dumps(out))
"""


def _inspect(tmp_path: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "false"}
    env = {k: v for k, v in env.items() if not k.startswith("TRIPFLOW_")}
    result = subprocess.run(
        [str(airflow_bin() / "python"), "-c", INSPECT.format(folder=str(ROOT / "dags"))],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_dags_import_with_expected_tasks_and_order(tmp_path: Path) -> None:
    found = _inspect(tmp_path)
    assert found["errors"] == {}
    dags = found["dags"]
    assert set(dags) == {"tripflow_daily", "tripflow_backfill", "tripflow_replay"}

    daily = dags["tripflow_daily"]
    assert daily["order"][:3] == ["bronze", "silver", "marts"]
    assert set(daily["order"][3:]) == {"quality", "hot_freshness"}
    assert daily["edges"] == [["bronze", "silver"], ["marts", "hot_freshness"],
                              ["marts", "quality"], ["silver", "marts"]]
    assert (daily["catchup"], daily["max_active_runs"]) == (False, 1)
    assert daily["scheduled"] != "NullTimetable"
    assert daily["retries"]["bronze"] >= 1 and daily["retries"]["hot_freshness"] == 0
    assert daily["retries"]["quality"] == 0

    backfill = dags["tripflow_backfill"]
    assert backfill["order"] == ["backfill"]
    assert backfill["params"] == ["from", "to"]
    assert backfill["scheduled"] == "NullTimetable"

    replay = dags["tripflow_replay"]
    assert replay["order"] == ["plan", "replay_server"]
    assert replay["params"] == ["path", "servers", "speed"]
    assert replay["scheduled"] == "NullTimetable"


def test_dag_files_read_nothing_at_import() -> None:
    """No Variable/Connection/env lookups at import time; tripflow imported inside tasks."""
    for path in (ROOT / "dags").glob("*.py"):
        source = path.read_text()
        top_level = [ln for ln in source.splitlines() if not ln.startswith((" ", "\t"))]
        for needle in ("Variable", "BaseHook", "Connection", "os.environ", "getenv"):
            assert needle not in source, f"{path.name} mentions {needle}"
        assert not any(ln.startswith(("import tripflow", "from tripflow")) for ln in top_level)
