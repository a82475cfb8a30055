"""`pyarrow.dataset`, loaded without pyarrow importing pandas on the way.

Loading pyarrow's dataset module builds a scalar, and building it makes pyarrow look for
pandas by importing it: about 0.2 s at the start of every batch command, for a library
tripflow never hands to pyarrow (pyspark brings it along for the Spark engine). pandas is
hidden for that one import only. Afterwards pyarrow believes pandas is absent until asked
for it explicitly: `to_pandas()` and friends import it then, and `enable_pandas()` turns
pyarrow's pandas integration back on for code that hands pandas objects to pyarrow.

Import `pads` from here rather than `pyarrow.dataset` directly; the first import in a
process decides (a process that already imported pandas keeps it, nothing is hidden).

`prefer_jemalloc()` is the batch steps' other pyarrow setting: which allocator Arrow uses.
"""

from __future__ import annotations

import importlib.abc
import sys


class _NoPandas(importlib.abc.MetaPathFinder):
    """Makes `import pandas` fail (as if it were not installed) while it is in place."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("hidden while pyarrow.dataset loads", name=name)


if "pyarrow.dataset" in sys.modules or "pandas" in sys.modules:
    import pyarrow.dataset as pads
else:
    _hide = _NoPandas()
    sys.meta_path.insert(0, _hide)
    try:
        import pyarrow.dataset as pads
    finally:
        sys.meta_path.remove(_hide)

__all__ = ["enable_pandas", "pads", "prefer_jemalloc"]


def enable_pandas() -> None:
    """pyarrow's pandas integration on (imports pandas): call before handing pandas objects
    to pyarrow, as pyspark does."""
    import pyarrow.lib

    pyarrow.lib._pandas_api.pd  # noqa: B018  # asking for pandas imports it, for good


def prefer_jemalloc() -> None:
    """Arrow's memory from jemalloc where pyarrow is built with it, unless
    ARROW_DEFAULT_MEMORY_POOL chooses. pyarrow's default (mimalloc) keeps the pages of a
    batch step's large short-lived tables resident; jemalloc hands them back (measured on
    silver's groups: 1.02 GB peak with mimalloc, 0.84 GB with jemalloc, same time)."""
    import contextlib
    import os

    import pyarrow as pa

    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    with contextlib.suppress(NotImplementedError):  # a build without it keeps the default
        pa.set_memory_pool(pa.jemalloc_memory_pool())
