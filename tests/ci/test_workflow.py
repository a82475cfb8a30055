""".github/workflows/ci.yml runs what .ci/run runs (ruff, every test, the bundle build) and
passes actionlint, which does reject a broken workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = os.environ.get("TRIPFLOW_ACTIONLINT") or shutil.which("actionlint")
    assert binary, "actionlint is missing: run `make test` (it builds .tools/actionlint)"
    return subprocess.run([binary, "-no-color", str(path)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_workflow_passes_actionlint() -> None:
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_what_ci_runs() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    commands = {name: "\n".join(step.get("run", "") for step in job["steps"])
                for name, job in jobs.items()}
    assert "make lint" in commands["lint"]
    assert ".ci/run" in commands["test"].split()
    assert "tripflow dashboards build" in commands["bundle"]
    assert jobs["test"]["needs"] == "lint"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    text = WORKFLOW.read_text().replace("${{ github.ref }}", "${{ github.no_such_thing }}")
    broken.write_text(text.replace("needs: lint", "needs: lnit", 1))
    result = _actionlint(broken)
    assert result.returncode == 1
    assert "no_such_thing" in result.stdout
    assert 'needs job "lnit" which does not exist' in result.stdout
