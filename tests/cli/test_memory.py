"""tripflow.memory: every tripflow command has all of Arrow allocate with glibc's malloc,
its C++ readers included (issue 20: mimalloc's per-thread caches in the Parquet reader
held ≈ 0.4 GB of silver's peak), unless the user chose a pool."""

from __future__ import annotations

import os
import subprocess
import sys

# What Arrow's C++ code allocates with: nothing in the child sets pyarrow's own pool.
_BACKEND = "import tripflow.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _backend(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", _BACKEND], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_a_tripflow_command_has_arrow_allocate_with_malloc() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert _backend(env) == "system"


def test_a_pool_the_user_chose_wins() -> None:
    assert _backend({**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"
