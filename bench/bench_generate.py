"""Benchmark the full-scale generator preset (2013-01-01 → 2020-10-28, ≈ 5.3 M clicks).

    PYTHONPATH=src python bench/bench_generate.py [OUT_DIR] [--days N] [--seed S]

Without OUT_DIR the files go to a temporary folder that is removed afterwards. `--days N`
runs only the first N days of the preset (the catalogue file is still full size). Prints
one JSON object: clicks, lines, seconds, clicks_per_s, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from tripflow.records.generate import generate_preset_tripclick


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(out_dir: Path, days: int | None, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    manifest = generate_preset_tripclick(out_dir, seed=seed, days=days)
    seconds = time.perf_counter() - started
    return {
        "clicks": manifest.totals.clicks,
        "lines": manifest.totals.lines,
        "seconds": round(seconds, 2),
        "clicks_per_s": round(manifest.totals.clicks / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, help="where to write (default: temp)")
    parser.add_argument("--days", type=int, default=None, help="only the first N days")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.out_dir is not None:
        result = _run(args.out_dir, args.days, args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="tripflow-bench-") as folder:
            result = _run(Path(folder), args.days, args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
