"""Throughput of the producer (`tripflow produce`, bulk mode) into the embedded broker.

    PYTHONPATH=src python bench/bench_produce.py [--data DIR] [--days 10]
        [--sessions-per-day 30000] [--servers 2] [--repeat 3] [--broker kafka|tansu]
        [--brokers N]

Generates day files once with `tripflow.records.generate` (≈ 94 k lines a day at the
defaults: ~0.9 M lines, ~400 MB; kept in --data and reused when it holds day files),
starts a broker of its own (the embedded default, or --broker: Apache Kafka with
--brokers N, or tansu; under a temporary TRIPFLOW_HOME, stopped at the end), then
produces everything --repeat times, each into a fresh topic, exactly as `tripflow
produce DIR --servers N` does: acks=all, idempotent, lz4, delivery reports counted.
The time of a run covers it all: starting the server processes, the topic, reading,
sending and the last delivery report.

Prints one JSON object: records, mb (value bytes), seconds, records_per_s and mb_per_s of
the best run, median_records_per_s, every run's records_per_s, the CPU time per record
of the reader, the servers and the broker (a figure that does not depend on what else
the machine is doing; the load average before the bench says how busy it was), the
peak RSS of the reading process and of the largest server process, and the speed-up
over the original system's producer (about 4,500 records/s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from contextlib import suppress
from datetime import date
from pathlib import Path

import psutil

from tripflow import services
from tripflow.ingestion import produce
from tripflow.records.generate import generate
from tripflow.records.readers import list_day_files
from tripflow.services import kafka
from tripflow.services.broker import BrokerPaths
from tripflow.settings import Settings

ORIGINAL_RECORDS_PER_S = 4_500


def _dataset(folder: Path, days: int, sessions_per_day: int) -> list[Path]:
    if not list_day_files(folder):
        generate(folder, start=date(2016, 1, 4), days=days, sessions_per_day=sessions_per_day,
                 dup_rate=0.005, late_rate=0.002, bad_rate=0.0005, bots=3)
    return list_day_files(folder)


def _cpu_seconds(brokers: list[psutil.Process]) -> tuple[float, float, float]:
    """CPU seconds so far of this process, of its finished children (the servers), and
    of the broker processes together."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_times = [b.cpu_times() for b in brokers]
    return (own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime,
            sum(t.user + t.system for t in broker_times))


def _broker_processes(settings: Settings) -> list[psutil.Process]:
    if services.broker_kind(settings) == "kafka":
        paths = services.kafka_paths(settings)
        return [psutil.Process(kafka.pid(paths, n.id)) for n in kafka.nodes(paths)]
    state = BrokerPaths(settings.home_dir).state_file  # the embedded tansu's pid
    return [psutil.Process(json.loads(state.read_text())["pid"])]


class _PeakRss:
    """Samples the RSS of this process and of its server processes while runs go on
    (ru_maxrss would also count the generator's memory, and a child's copy of this
    process between fork and exec)."""

    def __init__(self, broker_pids: set[int]) -> None:
        self.reader_mb = self.server_mb = 0.0
        self._broker_pids = broker_pids
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.05):
            with suppress(psutil.Error):
                self.reader_mb = max(self.reader_mb, me.memory_info().rss / 2**20)
            for child in me.children():
                if child.pid in self._broker_pids:
                    continue
                with suppress(psutil.Error):
                    self.server_mb = max(self.server_mb, child.memory_info().rss / 2**20)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of day files (generated there when empty)")
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--sessions-per-day", type=int, default=30_000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                        help="embedded broker kind (default: tripflow's default)")
    parser.add_argument("--brokers", type=int, default=None, help="Apache Kafka brokers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tripflow-bench-") as scratch:
        data = args.data or Path(scratch) / "log"
        files = _dataset(data, args.days, args.sessions_per_day)
        load_before = round(os.getloadavg()[0], 2)
        home = Path(scratch) / "home"
        chosen = {k: v for k, v in (("broker", args.broker), ("brokers", args.brokers)) if v}
        settings = Settings(home=home, kafka_bootstrap=None, **chosen)
        services.up(settings, pg=False)
        try:
            bootstrap = services.kafka_bootstrap(settings, start=False)
            broker = _broker_processes(settings)
            runs = []
            peak = _PeakRss({b.pid for b in broker})
            with peak:
                for attempt in range(args.repeat):
                    run_settings = settings.model_copy(update={
                        "kafka_bootstrap": bootstrap, "topic": f"bench_produce_{attempt}"})
                    cpu_before = _cpu_seconds(broker)
                    began = time.perf_counter()
                    summary = produce(files, run_settings, servers=args.servers)
                    seconds = time.perf_counter() - began
                    cpu = [after - before for after, before in
                           zip(_cpu_seconds(broker), cpu_before, strict=True)]
                    if not summary.ok:
                        raise SystemExit(f"run {attempt} lost records: {summary.line()}")
                    runs.append((summary.delivered / seconds, seconds, summary, cpu))
        finally:
            services.down(settings)

    best_rate, best_seconds, best, best_cpu = max(runs, key=lambda run: run[0])
    per_record_us = [round(seconds / best.delivered * 1e6, 2) for seconds in best_cpu]
    print(json.dumps({
        "broker": services.broker_kind(settings),
        "brokers": len(broker),
        "records": best.delivered,
        "mb": round(best.bytes_sent / 1e6, 1),
        "servers": args.servers,
        "seconds": round(best_seconds, 2),
        "records_per_s": round(best_rate),
        "mb_per_s": round(best.bytes_sent / 1e6 / best_seconds, 1),
        "median_records_per_s": round(statistics.median(run[0] for run in runs)),
        "runs_records_per_s": [round(run[0]) for run in runs],
        # Every run's CPU per record: the first run also pays a fresh broker's JIT warm-up.
        "runs_cpu_us_per_record": [
            dict(zip(("reader", "servers", "broker"),
                     (round(seconds / run[2].delivered * 1e6, 2) for seconds in run[3]),
                     strict=True)) for run in runs],
        # CPU time per record of the best run: the reading process, the server
        # processes together, the broker. What a run costs, whatever else the machine does.
        "cpu_us_per_record": dict(zip(("reader", "servers", "broker"), per_record_us,
                                      strict=True)),
        "load_average_1m_before": load_before,
        "peak_rss_mb": round(peak.reader_mb, 1),
        "peak_rss_server_mb": round(peak.server_mb, 1),
        "speedup_vs_original": round(best_rate / ORIGINAL_RECORDS_PER_S, 1),
    }))


if __name__ == "__main__":
    main()
