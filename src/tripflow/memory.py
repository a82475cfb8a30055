"""A process's memory settings: glibc's malloc and Arrow's pool (tuned: the RSS figures of
bench/bench_stream.py for the stream worker, of bench/bench_e2e.py for the batch steps).

Each step runs alone in its process, so these settings are its own. Arrow allocates with
glibc's malloc rather than its own pools: mimalloc (pyarrow's default) and jemalloc keep
freed pages cached per thread, and Arrow's I/O threads (8 of them, reading Parquet) then
each hold tens of MB that no call hands back. Measured at full scale, silver peaked at
1.24-1.44 GB before (pyarrow's calls on jemalloc, Arrow's C++ code on mimalloc) and at
0.92 GB with these settings, in the same time (marts: 0.80 → 0.71 GB).
ARROW_DEFAULT_MEMORY_POOL, when set, still chooses Arrow's pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os

# Arrow reads it once, when it first allocates; glibc's malloc unless already chosen.
_ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def use_malloc_for_arrow() -> None:
    """Arrow's memory from glibc's malloc, for all of Arrow (its C++ readers and kernels
    included, not only what pyarrow's Python calls allocate). Arrow decides on its first
    allocation, so this runs before pyarrow is used: first thing in every tripflow command
    (tripflow.cli), and in the batch steps and the stream worker when they run from
    Python. ARROW_DEFAULT_MEMORY_POOL, when set, still chooses."""
    os.environ.setdefault(_ARROW_POOL_VARIABLE, "system")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc


_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
# The stream worker's batches are small (≈ 10 MB): from 64 KiB up, blocks get their own
# mappings. The batch steps allocate hundreds of MB per group: below 1 MiB blocks reuse the
# heap (mapping and zeroing every Arrow buffer afresh costs them CPU).
STREAM_MMAP_THRESHOLD = 64 * 1024
BATCH_MMAP_THRESHOLD = 1024 * 1024


# Python's cyclic collector: a consumer's batch holds ~100 k Kafka messages (container
# objects) at once, and with the default thresholds (700, 10, 10) the collector traverses
# them again and again: 10 % of bronze's samples were in it (py-spy, full scale). Young
# objects are still collected every 50 k allocations; passes over older ones become rare.
# Measured (bench_bronze, full scale, alternated): 180-188 k records/s before, 186-204 k
# after (CPU 6.5-6.7 -> 5.8-6.4 us/record); the stream worker within noise.
GC_THRESHOLDS = (50_000, 20, 100)


def malloc_trim() -> None:
    """glibc's malloc_trim: gives freed heap memory back to the OS. Each batch allocates
    and frees tens of MB; without it the process keeps the high-water mark."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def bound_process_memory(mmap_threshold: int) -> None:
    """The process's memory settings (call once, at the start of a step):
    - at most two glibc arenas: by default each thread that allocates (librdkafka's,
      Arrow's I/O threads, libpq's) gets its own arena, and each keeps its high-water mark;
    - blocks from `mmap_threshold` up get their own mappings, returned to the OS when
      freed. By default glibc raises that threshold to the largest block freed so far,
      after which such blocks fragment its heap;
    - Arrow allocates with malloc (see the module's docstring and use_malloc_for_arrow);
    - Python's cyclic collector runs its passes far less often (GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    use_malloc_for_arrow()
    if os.environ[_ARROW_POOL_VARIABLE] == "system":
        import pyarrow as pa

        # pyarrow's own default, in case Arrow had allocated before the variable was set
        pa.set_memory_pool(pa.system_memory_pool())
