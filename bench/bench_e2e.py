"""Files → cold marts in PostgreSQL, run as a user would run it, timed end to end.

`tripflow produce DIR` with `tripflow bronze --until-idle` started beside it, then
`tripflow silver --changed` and `tripflow marts --changed`; then one new day through the
same four commands (the incremental run, as the Airflow DAG runs it: two processes), and
that day's silver and marts rebuilt once more by one `tripflow backfill --from D --to D`
(the same work in one process). Each step is a real `tripflow` process; its peak RSS is
the largest sum over its process tree, sampled every 0.1 s.

Then bronze alone: the full topic read again into a new lake folder by one `tripflow
bronze --until-idle 3` (its own throughput, not bounded by the producer beside it).

Prints one JSON object with seconds, CPU seconds and peak RSS per step (the CPU of a
step's process tree, sampled every 0.1 s, so a process's last 0.1 s may be missed), the
seconds a step's own summary line reports (`step_s`: its work, without the process
start, imports and quality checks), silver's and the marts' seconds per phase (`phases_s`,
from the run log; summed over threads, so they can exceed the wall time), the CPU the
broker and PostgreSQL used during each phase, the wall time from the first command to the
marts in PostgreSQL, and the performance issue's goals met or not.

Run: PYTHONPATH=src python bench/bench_e2e.py [--data DIR] [--days N] [--home DIR]
  --data: the generated files (generated there with --preset tripclick when absent)
  --days: only the first N days of the preset (a quicker, smaller run)
Embedded services start under --home (default ./.tripflow-bench); every run uses a new
topic, lake folder and database there.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

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
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds, last seen
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
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                    self.cpu[proc.pid] = times.user + times.system
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
        lines = output.strip().splitlines()
        summary = lines[-1] if lines else ""
        figures = {"seconds": round(seconds, 2), "cpu_s": round(sum(self.cpu.values()), 1),
                   "peak_rss_mb": round(self.peak_rss / 2**20), "summary": summary}
        # The step's own seconds, from its summary line ("silver: … 0.3 s", "marts (duckdb):
        # …; 0.4 s"): its work, without the process start, imports and quality checks.
        own = [line for line in lines if line.startswith(f"{self.name}:")
               or line.startswith(f"{self.name} (")]
        found = re.findall(r"[,;] ([\d.]+) s\b", own[-1]) if own else []
        if found:
            figures["step_s"] = float(found[-1])
        return figures


def service_cpu(home: Path) -> dict[str, float]:
    """CPU seconds used so far by the embedded broker and PostgreSQL (their process trees)."""
    pids: dict[str, list[int]] = {"broker": [], "postgres": []}
    kafka = home / "kafka.json"
    if kafka.exists():
        pids["broker"] = [int(pid) for pid in json.loads(kafka.read_text())["pids"].values()]
    postmaster = home / "pg" / "postmaster.pid"
    if postmaster.exists():
        pids["postgres"] = [int(postmaster.read_text().split()[0])]
    used = {}
    for name, roots in pids.items():
        total = 0.0
        for pid in roots:
            try:
                root = psutil.Process(pid)
                times = root.cpu_times()  # with exited children (PostgreSQL's backends)
                total += times.user + times.system + times.children_user + times.children_system
                for proc in root.children(recursive=True):
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        used[name] = total
    return used


def services_during(home: Path, before: dict[str, float]) -> dict[str, float]:
    after = service_cpu(home)
    return {f"{name}_cpu_s": round(after[name] - before[name], 1) for name in after}


def pipeline(source: Path, env: dict[str, str], home: Path) -> dict[str, Any]:
    """produce ∥ bronze, then silver, then marts; seconds from the first start."""
    started = time.monotonic()
    services = service_cpu(home)
    produce = Step("produce", ["produce", str(source)], env)
    bronze = Step("bronze", ["bronze", "--until-idle", "3"], env)
    steps: dict[str, Any] = {"produce": produce.wait(), "bronze": bronze.wait()}
    steps["services_during_produce_and_bronze"] = services_during(home, services)
    services = service_cpu(home)
    steps["silver"] = Step("silver", ["silver", "--changed"], env).wait()
    steps["marts"] = Step("marts", ["marts", "--changed"], env).wait()
    steps["services_during_silver_and_marts"] = services_during(home, services)
    for step in ("silver", "marts"):
        steps[step]["phases_s"] = phase_seconds(env["TRIPFLOW_PG_DSN"], step)
    steps["wall_s"] = round(time.monotonic() - started, 2)
    return steps


def phase_seconds(dsn: str, step: str) -> dict[str, float]:
    """The phase timings the step's last run wrote at the end of its run-log detail."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select detail from tripflow.run_log where step = %s "
                           "order by run_id desc limit 1", (step,)).fetchone()
    found = re.search(r"; timings (\{.*\})$", row[0] or "") if row else None
    return ast.literal_eval(found.group(1)) if found else {}


def bronze_alone(env: dict[str, str], home: Path, lake: Path, records: int) -> dict[str, Any]:
    """The whole topic into a new lake folder by one bronze run: its own throughput."""
    services = service_cpu(home)
    step = Step("bronze", ["bronze", "--until-idle", "3"],
                {**env, "TRIPFLOW_LAKE_URI": str(lake)}).wait()
    step.update(services_during(home, services))
    rate = re.search(r"\(([\d,]+) records/s\)", step["summary"])
    step["records_per_s"] = int(rate.group(1).replace(",", "")) if rate else None
    step["cpu_us_per_record"] = round(step["cpu_s"] / records * 1e6, 2)
    return step


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

    home = base.home_dir
    figures["full"] = pipeline(args.data, env, home)
    last = max(dt.date.fromisoformat(day) for day in manifest.days)
    day_file = next_day(args.data, last)
    figures["incremental_day"] = pipeline(day_file, env, home)
    day_text = day_file.stem  # the day the file holds (YYYY-MM-DD.json)
    figures["incremental_day"]["backfill_one_process"] = Step(
        "backfill", ["backfill", "--from", day_text, "--to", day_text], env).wait()
    figures["bronze_alone"] = bronze_alone(env, home, home / f"lake-{run_id}-bronze-alone",
                                           manifest.totals.lines)

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
        # Of which the steps' own work (what their summary lines say): the rest is two
        # Python processes starting, importing their libraries and running the checks.
        "one_day_incremental_steps_own_s": round(
            day["silver"].get("step_s", 0) + day["marts"].get("step_s", 0), 2),
        # The same day's silver and marts again, by one `tripflow backfill` process.
        "one_day_incremental_one_process_s": day["backfill_one_process"]["seconds"],
        "one day incremental in one process (backfill) <= 1 s":
            day["backfill_one_process"]["seconds"] <= 1,
        "peak_batch_rss_mb": peak,
        "peak RSS of any batch step <= 1 GB": peak <= 1024,
        "bronze_alone_records_per_s": figures["bronze_alone"]["records_per_s"],
        "bronze >= 400 k records/s": (figures["bronze_alone"]["records_per_s"] or 0) >= 400_000,
    }
    cpu = sum(full[step]["cpu_s"] for step in ("produce", "bronze", "silver", "marts")) + sum(
        full[phase][name] for phase in ("services_during_produce_and_bronze",
                                        "services_during_silver_and_marts")
        for name in ("broker_cpu_s", "postgres_cpu_s"))
    figures["full"]["cpu_s_total"] = round(cpu, 1)
    figures["full"]["cpu_us_per_record"] = round(cpu / manifest.totals.lines * 1e6, 2)
    figures["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
