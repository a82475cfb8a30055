"""tripflow.arrow_dataset: the batch steps load pyarrow.dataset without pandas (≈0.2 s of
every command's start, issue 20), and pandas still works when code asks for it."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import tripflow.lake, tripflow.processing.silver, tripflow.marts.run, tripflow.quality.checks
assert "pandas" not in sys.modules, "pandas was imported"
assert "confluent_kafka" not in sys.modules, "silver or marts loaded the Kafka client"
import pyarrow as pa
from tripflow.arrow_dataset import enable_pandas, pads
table = pa.table({"n": [1, 2, 3]})
assert pads.dataset(table).to_table().num_rows == 3
assert table.to_pandas()["n"].sum() == 6           # asked for explicitly: imported then
enable_pandas()
import pandas as pd
assert pa.Table.from_pandas(pd.DataFrame({"x": [1.5]})).column("x").to_pylist() == [1.5]
assert pa.array(pd.Series([1, 2])).to_pylist() == [1, 2]   # pandas objects recognised
print("ok")
"""


def test_batch_modules_load_without_pandas_and_pandas_works_when_asked() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
