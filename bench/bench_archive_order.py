"""Benchmark reading a logs.tar.gz whose day files are in reverse date order.

    PYTHONPATH=src python bench/bench_archive_order.py [--days N] [--keep DIR]
    PYTHONPATH=src python bench/bench_archive_order.py --read ARCHIVE [--spool-dir DIR]

The first form generates N synthetic days (`tripflow generate`, default 120, about
4 MB a day uncompressed), packs them twice with `tarfile` (gzip): in date order and in
reverse date order, then reads each archive with `iter_day_files` in a fresh process
and prints one JSON object: the archives' sizes and, per order, lines, seconds and
rss_mb_peak (the reading process's peak resident set, VmHWM). `--keep DIR` builds in DIR
and leaves the files there (an archive already in DIR is reused); otherwise a temporary
folder is removed afterwards. The second form only reads ARCHIVE and prints
{"lines", "seconds", "rss_mb_peak"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

from tripflow.records.generate import generate
from tripflow.records.readers import iter_day_files


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    import resource  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read(archive: Path, spool_dir: Path | None) -> dict[str, float]:
    started = time.perf_counter()
    lines = 0
    for _file, _line in iter_day_files([archive], spool_dir=spool_dir):
        lines += 1
    return {
        "lines": lines,
        "seconds": round(time.perf_counter() - started, 2),
        "rss_mb_peak": round(_peak_rss_mb(), 1),
    }


def _pack(folder: Path, archive: Path, *, reverse: bool) -> None:
    days = sorted(folder.glob("????-??-??.json"), reverse=reverse)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "allarticles.txt", arcname="logs/allarticles.txt")
        for day in days:
            tar.add(day, arcname=f"logs/{day.name}")


def _read_in_subprocess(archive: Path, spool_dir: Path | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--read", str(archive)]
    if spool_dir is not None:
        command += ["--spool-dir", str(spool_dir)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def _run(work: Path, days: int, spool_dir: Path | None) -> dict[str, object]:
    in_order, reverse = work / "logs-in-order.tar.gz", work / "logs-reverse.tar.gz"
    if not (in_order.exists() and reverse.exists()):
        folder = work / "days"
        generate(folder, start=date(2016, 1, 1), days=days)
        _pack(folder, in_order, reverse=False)
        _pack(folder, reverse, reverse=True)
    return {
        "days": days,
        "archive_mb": round(reverse.stat().st_size / 2**20, 1),
        "in_order": _read_in_subprocess(in_order, spool_dir),
        "reverse": _read_in_subprocess(reverse, spool_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120, help="days to generate")
    parser.add_argument("--keep", type=Path, default=None, help="build in DIR and keep it")
    parser.add_argument("--read", type=Path, default=None, help="only read this archive")
    parser.add_argument("--spool-dir", type=Path, default=None, help="folder for the spool")
    args = parser.parse_args(argv)
    if args.read is not None:
        result: dict[str, object] = dict(_read(args.read, args.spool_dir))
    elif args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = _run(args.keep, args.days, args.spool_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="tripflow-bench-") as folder:
            result = _run(Path(folder), args.days, args.spool_dir)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
