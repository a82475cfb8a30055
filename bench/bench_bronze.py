"""Bronze alone: a topic (produced once, kept between runs) copied into a new lake folder.

Prints one JSON object per run: records/s (first record read → last commit), wall
seconds, CPU seconds (user + sys of the bronze process) and µs of CPU per record, peak RSS,
batches and parquet files written, and the load average (the machine is shared).

Run: PYTHONPATH=src python bench/bench_bronze.py --data DIR [--days N] [--home DIR]
     [--topic NAME] [--runs K] [--broker kafka|tansu] [--batch-rows N]
  --topic: reuse a topic produced by an earlier run (its name is printed); else the first
           N day files of DIR (all by default) are produced to a new topic first.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
import uuid
from pathlib import Path
from typing import Any

from tripflow import services
from tripflow.settings import Settings


def _child(fn: Any, conn: Any, *args: Any) -> None:
    started = time.monotonic()
    result = fn(*args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send({**result, "wall_s": round(time.monotonic() - started, 2),
               "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
               "peak_rss_mb": round(usage.ru_maxrss / 1024)})


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args) in a forked process, with its wall and CPU seconds and peak RSS."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(fn, child, *args))
    process.start()
    result = parent.recv()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{fn.__name__} failed (exit {process.exitcode})")
    return result


def produce_files(files: list[Path], settings: Settings) -> dict[str, Any]:
    from tripflow.ingestion.producer import produce

    summary = produce(files, settings)
    if not summary.ok:
        raise RuntimeError(summary.line())
    return {"records": summary.delivered}


def bronze(settings: Settings, batch_rows: int | None) -> dict[str, Any]:
    from tripflow.processing.bronze import run_bronze

    s = run_bronze(settings, until_idle=3.0,
                   **({"max_batch_rows": batch_rows} if batch_rows else {}))
    return {"records": s.records, "written": s.written, "batches": s.batches,
            "undated": s.undated, "records_per_s": round(s.records_per_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/tripflow-bench-data"))
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    parser.add_argument("--topic", default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="bronze's max_batch_rows (default: run_bronze's)")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default=None)
    args = parser.parse_args()

    base = Settings(home=args.home, **({"broker": args.broker} if args.broker else {}))
    services.up(base)
    topic = args.topic or f"bench_bronze_{uuid.uuid4().hex[:8]}"
    common = {"home": args.home, "kafka_bootstrap": services.kafka_bootstrap(base),
              "pg_dsn": services.pg_dsn(base), "topic": topic}
    out: dict[str, Any] = {"broker": services.broker_kind(base), "topic": topic,
                           "cpus": os.cpu_count()}
    if args.topic is None:
        files = sorted(args.data.glob("*-*-*.json"))[: args.days]
        out["produce"] = in_child(produce_files, files, Settings(**common))
    runs = []
    for _ in range(args.runs):
        lake = base.home_dir / f"lake-bronze-{uuid.uuid4().hex[:8]}"
        load = os.getloadavg()[0]
        result = in_child(bronze, Settings(**common, lake_uri=str(lake)), args.batch_rows)
        files_written = sum(1 for _ in lake.rglob("*.parquet"))
        result.update({
            "cpu_us_per_record": round(result["cpu_s"] * 1e6 / max(result["written"], 1), 2),
            "parquet_files": files_written, "load_average_at_start": load})
        runs.append(result)
    out["runs"] = runs
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
