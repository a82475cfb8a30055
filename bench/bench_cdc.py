"""Change data capture's speed: catalog.documents → Debezium → topic → dim_documents.

1. Throughput: a catalogue of --documents documents is loaded and captured (the snapshot),
   then one statement corrects every title (--documents updates in one transaction).
   changes_per_s = updates / (time the last one was applied - the statement's commit);
   `capture_per_s` counts the same up to the last one published (tripflow.cdc_capture).
2. Edit → visible: --edits single-title edits, one every 0.2 s, of documents in the
   latest real-time top-20 snapshot; latency = when the new title shows in
   mart_realtime_top_docs_1h (polled every 5 ms) - when the editing transaction committed.
   p50 / p95 / max.
3. Memory and start: `tripflow cdc capture`'s RSS (sampled every 0.5 s; peak = VmHWM) and
   the time from its start to the first change published.

Capture and apply run as the real commands, in their own processes, on the embedded
PostgreSQL and broker of a fresh TRIPFLOW_HOME. Prints one JSON object.

Run: TRIPFLOW_JARS_DIR=.jars PYTHONPATH=src python bench/bench_cdc.py [--documents 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait(dsn: str, query: str, target: int, timeout: float = 600.0) -> float:
    """Poll until `query` returns at least `target`; returns the wall time it did."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(query).fetchone()
            if row and row[0] is not None and row[0] >= target:
                return time.time()
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {query} < {target} (at {row})")
            time.sleep(0.02)


class Rss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.samples, self.stop = psutil.Process(pid), [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.samples.append(self.proc.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                return

    def peak(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else max(self.samples, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="tripflow-bench-cdc-"))

    from tripflow import db, services
    from tripflow.cdc import catalog
    from tripflow.settings import Settings

    settings = Settings(home=home)
    services.up(settings)
    settings = services.resolve(settings)
    dsn = db.prepare(settings)
    env = {**os.environ, "TRIPFLOW_HOME": str(home), "TRIPFLOW_PG_DSN": settings.pg_dsn or "",
           "TRIPFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or ""}
    import pyarrow as pa
    n = args.documents
    with psycopg.connect(dsn) as conn:
        catalog.upsert(conn, pa.table({
            "document_id": pa.array(range(1, n + 1), pa.int64()),
            "title": [f"Document {i} on asthma in children" for i in range(1, n + 1)],
            "url": [f"http://example.org/doc/{i}" for i in range(1, n + 1)]}))
        conn.commit()

    logs = home / "bench-logs"
    logs.mkdir(exist_ok=True)
    started = time.time()
    capture = subprocess.Popen([sys.executable, "-m", "tripflow", "cdc", "capture"], env=env,
                               stdout=(logs / "capture.log").open("wb"),
                               stderr=subprocess.STDOUT)
    applier = subprocess.Popen([sys.executable, "-m", "tripflow", "cdc", "apply"], env=env,
                               stdout=(logs / "apply.log").open("wb"), stderr=subprocess.STDOUT)
    rss = Rss(capture.pid)
    rss.start()
    applied = "select count(*) from tripflow.cdc_changes"
    published = "select sum(changes) from tripflow.cdc_capture"
    snapshot_done = _wait(dsn, applied, n)
    result: dict[str, object] = {"documents": n,
                                 "snapshot_s": round(snapshot_done - started, 2)}

    # 1. Throughput of streamed updates.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update catalog.documents set title = title || ' (corrected)'")
        committed = time.time()
    published_at = _wait(dsn, published, 2 * n)
    applied_at = _wait(dsn, applied, 2 * n)
    result.update({"updates": n, "changes_per_s": round(n / (applied_at - committed)),
                   "capture_per_s": round(n / (published_at - committed))})

    # 2. Edit → visible in the real-time top 20.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into mart_realtime_top_docs_1h select now(), g, g, "
                     "'Document ' || g, 100 - g, 10 from generate_series(1, 20) g")
        latencies = []
        poll = psycopg.connect(dsn, autocommit=True)
        for i in range(args.edits):
            doc, title = i % 20 + 1, f"Edited title {i}"
            conn.execute("update catalog.documents set title = %s where document_id = %s",
                         (title, doc))
            committed = time.time()
            while poll.execute("select title from mart_realtime_top_docs_1h where "
                               "document_id = %s", (doc,)).fetchone()[0] != title:
                if time.time() - committed > 60:
                    raise SystemExit(f"edit {i} not visible after 60 s")
                time.sleep(0.005)
            latencies.append(time.time() - committed)
            time.sleep(0.2)
        poll.close()
    result.update({"edits": len(latencies),
                   "edit_visible_p50_ms": round(1000 * statistics.median(latencies)),
                   "edit_visible_p95_ms": round(1000 * _percentile(latencies, 0.95)),
                   "edit_visible_max_ms": round(1000 * max(latencies))})

    # 3. Memory, start.
    rss.stop.set()
    result.update({"capture_rss_mb_median": round(statistics.median(rss.samples)),
                   "capture_rss_mb_peak": round(rss.peak())})
    for proc in (capture, applier):
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    line = (logs / "capture.log").read_text()
    first = re.search(r"first after ([\d.]+) s", line)
    result["capture_first_change_s"] = float(first.group(1)) if first else None
    print(json.dumps(result))
    if args.home is None:
        services.down(settings)


if __name__ == "__main__":
    main()
