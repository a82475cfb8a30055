"""The stream worker's memory settings (tuned: see bench/bench_stream.py's RSS figures)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc


_LIBC = _libc()
_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3


def malloc_trim() -> None:
    """glibc's malloc_trim: gives freed heap memory back to the OS. Each batch allocates
    and frees tens of MB; without it the process keeps the high-water mark."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def bound_process_memory() -> None:
    """A worker's memory settings, for its whole process (it runs nothing else):
    - at most two glibc arenas: by default each thread that allocates (librdkafka's,
      the committer, libpq's) gets its own arena, and each keeps its high-water mark;
    - blocks from 64 KiB up (Arrow buffers of fetched records, parsed batches) get their
      own mappings, returned to the OS when freed. By default glibc raises that threshold
      to the largest block freed so far, after which such blocks fragment its heap;
    - Arrow allocates with malloc, not its default mimalloc pool, which keeps freed pages
      cached (tens of MB across batches) and which malloc_trim cannot reach."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, 2)
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    pa.set_memory_pool(pa.system_memory_pool())
