"""`pyarrow.dataset`, loaded without pyarrow importing pandas on the way.

Loading pyarrow's dataset module builds a scalar, and building it makes pyarrow look for
pandas by importing it: about 0.2 s at the start of every batch command, for a library
tripflow never hands to pyarrow (pyspark brings it along for the Spark engine). pandas is
hidden for that one import only. Afterwards pyarrow believes pandas is absent until asked
for it explicitly: `to_pandas()` and friends import it then, and `enable_pandas()` turns
pyarrow's pandas integration back on for code that hands pandas objects to pyarrow.

Import `pads` from here rather than `pyarrow.dataset` directly; the first import in a
process decides (a process that already imported pandas keeps it, nothing is hidden).

Which allocator Arrow uses is a process setting: `tripflow.memory`.
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

__all__ = ["enable_pandas", "pads"]


def enable_pandas() -> None:
    """pyarrow's pandas integration on (imports pandas): call before handing pandas objects
    to pyarrow, as pyspark does."""
    import pyarrow.lib

    pyarrow.lib._pandas_api.pd  # noqa: B018  # asking for pandas imports it, for good
