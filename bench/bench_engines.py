"""Silver + cold marts on DuckDB and on Spark (local[2]) over the same bronze.

Generates the data (≈ 1 M clicks by default: 30 days × 10,000 sessions, with duplicates,
late and bad lines; `--preset` for the full `--preset tripclick` scale, ≈ 5.4 M lines),
writes it once into a bronze Delta table as the loader would (no broker: the bench is about
the batch engines), copies that lake once per engine, and runs `tripflow silver --dates`
and `tripflow marts --dates` as real processes with TRIPFLOW_ENGINE set, each engine with
its own database. Peak RSS is the largest sum over the command's process tree (Spark's JVM
and its Python workers included), sampled every 0.1 s.

Prints one JSON object: per engine and step seconds, peak RSS and the command's summary,
the silver rows and mart rows each engine produced (which must be equal), and Spark's
time as a multiple of DuckDB's.

Run: PYTHONPATH=src python bench/bench_engines.py [--days 30] [--sessions-per-day 10000]
     [--preset] [--home DIR] [--engines duckdb,spark]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import Step, fresh_database

from tripflow import lake, services
from tripflow.marts.engine import mart_names
from tripflow.processing.bronze import BRONZE_SCHEMA, event_dates
from tripflow.records.generate import Manifest, generate, generate_preset_tripclick
from tripflow.settings import Settings

PARTITIONS = 6
CHUNK = 500_000


class Command(Step):
    """A `tripflow` step whose summary is its own line (the quality checks print after)."""

    def wait(self) -> dict[str, Any]:
        output, _ = self.proc.communicate()
        seconds = time.monotonic() - self.started
        self._sampler.join()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{output[-3000:]}")
        step = self.name.split()[-1]
        lines = [line for line in output.splitlines() if line.startswith(step)]
        return {"seconds": round(seconds, 2), "peak_rss_mb": round(self.peak_rss / 2**20),
                "summary": lines[-1] if lines else ""}


def generated(folder: Path, preset: bool, days: int, sessions: int) -> Manifest:
    if not (folder / "manifest.json").exists():
        if preset:
            generate_preset_tripclick(folder)
        else:
            generate(folder, start="2016-03-01", days=days, seed=16, sessions_per_day=sessions,
                     dup_rate=0.01, late_rate=0.005, bad_rate=0.001, bots=2)
    return Manifest.read(folder)


def lines_of(folder: Path) -> list[bytes]:
    found = []
    for path in sorted(folder.glob("????-??-??.json")):
        found += [line for line in path.read_bytes().split(b"\n") if line.strip()]
    return found


def write_bronze(uri: str, lines: list[bytes]) -> None:
    """Bronze rows as the loader writes them: round-robin partitions, offsets in order."""
    read_ms = int(time.time() * 1000)
    offsets = [0] * PARTITIONS
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start:start + CHUNK]
        index = np.arange(start, start + len(chunk))
        partition = (index % PARTITIONS).astype(np.int32)
        offset = np.empty(len(chunk), np.int64)
        for p in range(PARTITIONS):
            mine = partition == p
            offset[mine] = offsets[p] + np.arange(int(mine.sum()))
            offsets[p] += int(mine.sum())
        values = pa.array(chunk, pa.binary())
        stamps = pa.array(np.full(len(chunk), read_ms, np.int64))
        table = pa.Table.from_arrays([
            pa.array(["tripclick_raw_logs"] * len(chunk), pa.string()),
            pa.array(partition), pa.array(offset),
            stamps.cast(pa.timestamp("ms", tz="UTC")),
            pa.nulls(len(chunk), pa.binary()), values,
            pa.array([dt.datetime.now(dt.UTC)] * len(chunk), pa.timestamp("us", tz="UTC")),
            event_dates(values, stamps),
        ], schema=BRONZE_SCHEMA)
        write_deltalake(uri, table, mode="append", partition_by=["event_date"])


def rows_of(lake_dir: Path) -> dict[str, int]:
    settings = Settings(lake_uri=str(lake_dir))
    counts = {"silver": len(DeltaTable(lake.table_uri(settings, lake.SILVER))
                            .to_pyarrow_table(columns=["dedup_key"]))}
    for mart in mart_names():
        counts[mart] = len(DeltaTable(lake.table_uri(settings, lake.gold(mart)))
                           .to_pyarrow_table())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sessions-per-day", type=int, default=10_000)
    parser.add_argument("--preset", action="store_true", help="the full tripclick scale")
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    parser.add_argument("--engines", default="duckdb,spark")
    args = parser.parse_args()

    data = Path(f"/tmp/tripflow-bench-engines-{'preset' if args.preset else args.days}"
                f"-{args.sessions_per_day}")
    manifest = generated(data, args.preset, args.days, args.sessions_per_day)
    base = Settings(home=args.home)
    services.up(base)
    run = base.home_dir / f"engines-{uuid.uuid4().hex[:8]}"
    source = run / "bronze-lake"
    started = time.monotonic()
    write_bronze(lake.table_uri(Settings(lake_uri=str(source)), lake.BRONZE), lines_of(data))
    dates = sorted(manifest.days)
    span = f"{min(dates)}..{max(dates)}"
    figures: dict[str, Any] = {
        "scale": "full preset" if args.preset else f"{args.days} days",
        "lines": manifest.totals.lines, "clicks": manifest.totals.clicks, "dates": span,
        "bronze_write_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
        "note": "shared machine: other work ran beside the bench",
    }
    for engine in args.engines.split(","):
        lake_dir = run / f"lake-{engine}"
        shutil.copytree(source, lake_dir)
        env = {**os.environ, "TRIPFLOW_HOME": str(base.home_dir),
               "TRIPFLOW_PG_DSN": fresh_database(base), "TRIPFLOW_ENGINE": engine,
               "TRIPFLOW_LAKE_URI": str(lake_dir), "TRIPFLOW_KAFKA_BOOTSTRAP":
               services.kafka_bootstrap(base)}
        steps = {step: Command(f"{engine} {step}", [step, "--dates", span], env).wait()
                 for step in ("silver", "marts")}
        steps["seconds"] = round(steps["silver"]["seconds"] + steps["marts"]["seconds"], 2)
        steps["peak_rss_mb"] = max(steps["silver"]["peak_rss_mb"], steps["marts"]["peak_rss_mb"])
        steps["rows"] = rows_of(lake_dir)
        figures[engine] = steps
    if "duckdb" in figures and "spark" in figures:
        duck, spark = figures["duckdb"], figures["spark"]
        figures["same_rows"] = duck["rows"] == spark["rows"]
        figures["spark_over_duckdb"] = {
            step: round(spark[step]["seconds"] / duck[step]["seconds"], 1)
            for step in ("silver", "marts")}
    figures["load_average_at_end"] = os.getloadavg()[0]
    shutil.rmtree(run, ignore_errors=True)
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
