"""Files → cold marts in PostgreSQL, run as a user would run it, timed end to end.

`tripflow produce DIR` with `tripflow bronze --until-idle` started beside it, then
`tripflow silver --changed` and `tripflow marts --changed`; then one new day through the
same four commands (the incremental run). Each step is a real `tripflow` process; its peak
RSS is the largest sum over its process tree, sampled every 0.1 s.

Prints one JSON object with seconds and peak RSS per step, the wall time from the first
command to the marts in PostgreSQL, and the performance issue's goals met or not.

Run: PYTHONPATH=src python bench/bench_e2e.py [--data DIR] [--days N] [--home DIR]
  --data: the generated files (generated there with --preset tripclick when absent)
  --days: only the first N days of the preset (a quicker, smaller run)
Embedded services start under --home (default ./.tripflow-bench); every run uses a new
topic, lake folder and database there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import fresh_database

from tripflow import services
from tripflow.settings import Settings

TRIPFLOW = [sys.executable, "-m", "tripflow"]


class Step:
    """One `tripflow` command in its own process, with its peak tree RSS sampled."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*TRIPFLOW, *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.peak_rss = 0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while self.proc.poll() is None:
            rss = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
            self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.1)

    def wait(self) -> dict[str, Any]:
        output, _ = self.proc.communicate()
        seconds = time.monotonic() - self.started
        self._sampler.join()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{output[-3000:]}")
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        return {"seconds": round(seconds, 2), "peak_rss_mb": round(self.peak_rss / 2**20),
                "summary": summary}


def pipeline(source: Path, env: dict[str, str]) -> dict[str, Any]:
    """produce ∥ bronze, then silver, then marts; seconds from the first start."""
    started = time.monotonic()
    produce = Step("produce", ["produce", str(source)], env)
    bronze = Step("bronze", ["bronze", "--until-idle", "3"], env)
    steps = {"produce": produce.wait(), "bronze": bronze.wait()}
    steps["silver"] = Step("silver", ["silver", "--changed"], env).wait()
    steps["marts"] = Step("marts", ["marts", "--changed"], env).wait()
    steps["wall_s"] = round(time.monotonic() - started, 2)
    return steps


def next_day(data: Path, last: dt.date) -> Path:
    from tripflow.records.generate import generate

    extra = data.parent / f"{data.name}-next-day"
    if not (extra / "manifest.json").exists():
        generate(extra, start=last + dt.timedelta(days=1), days=1, seed=99,
                 sessions_per_day=650, dup_rate=0.005, late_rate=0.002, bad_rate=0.0005)
    return sorted(extra.glob("*-*-*.json"))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/tripflow-bench-data"))
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    args = parser.parse_args()

    from tripflow.records.generate import Manifest, generate_preset_tripclick

    if not (args.data / "manifest.json").exists():
        generate_preset_tripclick(args.data, days=args.days)
    manifest = Manifest.read(args.data)

    base = Settings(home=args.home)
    services.up(base)
    run_id = uuid.uuid4().hex[:8]
    env = {**os.environ, "TRIPFLOW_HOME": str(base.home_dir),
           "TRIPFLOW_PG_DSN": fresh_database(base),
           "TRIPFLOW_KAFKA_BOOTSTRAP": services.kafka_bootstrap(base),
           "TRIPFLOW_TOPIC": f"bench_e2e_{run_id}",
           "TRIPFLOW_LAKE_URI": str(base.home_dir / f"lake-{run_id}")}
    figures: dict[str, Any] = {
        "scale": "full preset" if args.days is None else f"first {args.days} days",
        "lines": manifest.totals.lines, "clicks": manifest.totals.clicks,
        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}

    figures["full"] = pipeline(args.data, env)
    last = max(dt.date.fromisoformat(day) for day in manifest.days)
    figures["incremental_day"] = pipeline(next_day(args.data, last), env)

    full, day = figures["full"], figures["incremental_day"]
    silver_marts = full["silver"]["seconds"] + full["marts"]["seconds"]
    peak = max(full[step]["peak_rss_mb"] for step in ("produce", "bronze", "silver", "marts"))
    figures["goals"] = {
        "files_to_cold_marts_s": full["wall_s"],
        "files to cold marts <= 45 s": full["wall_s"] <= 45,
        "silver_plus_marts_s": round(silver_marts, 2),
        "silver + marts <= 20 s": silver_marts <= 20,
        "one_day_incremental_silver_marts_s": round(
            day["silver"]["seconds"] + day["marts"]["seconds"], 2),
        "one day incremental (silver + marts) <= 1 s":
            day["silver"]["seconds"] + day["marts"]["seconds"] <= 1,
        "peak_batch_rss_mb": peak,
        "peak RSS of any batch step <= 1 GB": peak <= 1024,
    }
    figures["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
