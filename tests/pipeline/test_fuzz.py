"""Fuzz: mutated records through every step, on the real broker, database and lake.

produce → stream and bronze → silver → marts, each as the real `tripflow` command: no step
may exit non-zero, and every line is accounted for — valid distinct + duplicates + bad
(distinct, and how often seen) + punctuation = lines read. bench/bench_fuzz.py runs the
same with many more records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline.fuzzkit import account, expected, fuzz_files, run_pipeline
from tripflow.settings import Settings

pytestmark = pytest.mark.timeout(900)


def test_every_mutated_line_is_accounted_for_and_no_step_stops(
        tmp_path: Path, settings: Settings, tripflow_env: dict[str, str], tripflow_cli) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    data = fuzz_files(folder, records=1_500, seed=14, too_large=2)
    want = expected(data, read_ms=1_800_000_000_000)
    assert want.nul_removed > 0 and want.bad_distinct < want.bad_seen  # the cases are there

    produced = run_pipeline(lambda *args: tripflow_cli(*args, env=tripflow_env).stdout,
                            folder)
    figures = account(settings, data, want, produced)
    assert figures["lines"] == len(data.lines) and "Space Medicine" in want.areas
