"""The batch path at full scale: `tripflow generate --preset tripclick` (≈ 5.3 M clicks)
produced to a topic, then bronze, silver (all dates), the catalogue, the marts (all
dates, gold + PostgreSQL), and one new day's incremental silver + marts run.

Prints one JSON object: bronze records/s (first record read → last commit, so the group
join and the idle wait are not counted), seconds per step, peak RSS per step (each step
runs in its own forked process), and the targets of the batch-path issue.

Run: PYTHONPATH=src python bench/bench_batch.py [--data DIR] [--days N] [--home DIR]
  --data: where the generated files are (generated there when it holds no manifest.json)
  --days: only the first N days of the preset (a smaller, quicker run)
Embedded services are started under --home (default ./.tripflow-bench); every run uses a
new topic and a new lake folder there, and a new database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tripflow import services
from tripflow.settings import Settings


def in_child(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """fn(*args) in a forked process: (result, seconds, peak RSS in MB)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target() -> None:
        started = time.monotonic()
        result = fn(*args, **kwargs)
        seconds = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child.send((result, seconds, peak_mb))

    process = ctx.Process(target=target)
    process.start()
    result = parent.recv()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{fn.__name__} failed (exit {process.exitcode})")
    return result


def fresh_database(settings: Settings) -> str:
    """A new database on the embedded server, so the bench starts from empty marts."""
    server = services.pg_dsn(settings)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return f"{server.rpartition('/')[0]}/{name}"


def produce_folder(folder: Path, settings: Settings) -> dict[str, Any]:
    from tripflow.ingestion.producer import produce

    summary = produce([folder], settings)
    if not summary.ok:
        raise RuntimeError(summary.line())
    return {"records": summary.delivered, "line": summary.line()}


def bronze(settings: Settings, until_idle: float) -> dict[str, Any]:
    from tripflow.processing.bronze import run_bronze

    s = run_bronze(settings, until_idle=until_idle)
    return {"records": s.records, "written": s.written, "batches": s.batches,
            "records_per_s": round(s.records_per_s), "line": s.line()}


def silver(settings: Settings) -> dict[str, Any]:
    from tripflow.processing.silver import run_silver

    s = run_silver(settings, changed=True)
    return {"dates": len(s.dates), "rows_in": s.rows_in, "clicks": s.clicks,
            "duplicates": s.duplicates, "quarantined": s.quarantined, "line": s.line()}


def articles(settings: Settings, path: Path) -> dict[str, Any]:
    from tripflow.marts.articles import load_articles

    s = load_articles(settings, path)
    return {"articles": s.articles, "line": s.line()}


def marts(settings: Settings) -> dict[str, Any]:
    from tripflow.marts import run_marts

    s = run_marts(settings, changed=True)
    return {"dates": len(s.dates), "rows_in": s.rows_in, "rows_out": s.rows_out,
            "timings": s.timings, "line": s.line()}


def silver_and_marts(settings: Settings) -> dict[str, Any]:
    return {"silver": silver(settings), "marts": marts(settings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/tripflow-bench-data"))
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    parser.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                        help="embedded broker kind (default: tripflow's default)")
    parser.add_argument("--brokers", type=int, default=None, help="Apache Kafka brokers")
    args = parser.parse_args()

    chosen = {k: v for k, v in (("broker", args.broker), ("brokers", args.brokers)) if v}
    base = Settings(home=args.home, **chosen)
    services.up(base)
    run_id = uuid.uuid4().hex[:8]
    settings = Settings(home=args.home, pg_dsn=fresh_database(base),
                        kafka_bootstrap=services.kafka_bootstrap(base),
                        topic=f"bench_{run_id}", lake_uri=str(base.home_dir / f"lake-{run_id}"))
    figures: dict[str, Any] = {"scale": "full preset" if args.days is None
                               else f"first {args.days} days of the preset",
                               "broker": services.broker_kind(base),
                               "brokers": args.brokers or 1,
                               "cpus": os.cpu_count(),
                               "load_average_at_start": os.getloadavg()[0]}

    from tripflow.records.generate import Manifest, generate, generate_preset_tripclick

    if not (args.data / "manifest.json").exists():
        _, seconds, _ = in_child(generate_preset_tripclick, args.data, days=args.days)
        figures["generate_s"] = round(seconds, 1)
    manifest = Manifest.read(args.data)
    figures["lines"], figures["clicks"] = manifest.totals.lines, manifest.totals.clicks

    result, seconds, rss = in_child(produce_folder, args.data, settings)
    figures["produce"] = {"seconds": round(seconds, 1), "records_per_s":
                          round(manifest.totals.lines / seconds), "line": result["line"]}

    result, seconds, rss = in_child(bronze, settings, 5.0)
    figures["bronze"] = {**result, "seconds": round(seconds, 1), "peak_rss_mb": round(rss)}

    result, seconds, rss = in_child(silver, settings)
    figures["silver"] = {**result, "seconds": round(seconds, 1), "peak_rss_mb": round(rss)}

    result, seconds, rss = in_child(articles, settings, args.data / "allarticles.txt")
    figures["articles"] = {**result, "seconds": round(seconds, 1), "peak_rss_mb": round(rss)}

    result, seconds, rss = in_child(marts, settings)
    figures["marts"] = {**result, "seconds": round(seconds, 1), "peak_rss_mb": round(rss)}

    # One new day after the last one: produce it, bronze it, then silver + marts --changed.
    last = max(dt.date.fromisoformat(day) for day in manifest.days)
    extra = args.data.parent / f"{args.data.name}-next-day"
    if not (extra / "manifest.json").exists():
        generate(extra, start=last + dt.timedelta(days=1), days=1, seed=99,
                 sessions_per_day=650, dup_rate=0.005, late_rate=0.002, bad_rate=0.0005)
    day_files = sorted(extra.glob("*-*-*.json"))
    in_child(produce_folder, day_files[0], settings)
    in_child(bronze, settings, 3.0)
    result, seconds, rss = in_child(silver_and_marts, settings)
    figures["incremental_day"] = {**result, "seconds": round(seconds, 1),
                                  "peak_rss_mb": round(rss)}

    full = figures["silver"]["seconds"] + figures["marts"]["seconds"]
    peak = max(figures[step]["peak_rss_mb"] for step in ("bronze", "silver", "marts"))
    # The performance issue's goals for these steps (bench_e2e.py times the whole path).
    figures["targets"] = {
        "bronze >= 400 k records/s": figures["bronze"]["records_per_s"] >= 400_000,
        "silver + marts (with the load), all dates <= 20 s": full <= 20,
        "silver_plus_marts_s": round(full, 1),
        "one day incremental (silver + marts, one process) <= 1 s":
            figures["incremental_day"]["seconds"] <= 1,
        "peak_rss_mb": peak,
        "peak RSS of any batch step <= 1 GB": peak <= 1024,
    }
    figures["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
