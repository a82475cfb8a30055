"""The hot path's speed: throughput, freshness and memory of the stream worker.

1. Throughput: a topic holding ~1 M generated clicks (100 days × 3000 sessions, with the
   generator's duplicates, late and bad lines and bots; produced in bulk by one server, so
   each partition is in file order) is streamed to idle by one worker.
   events_per_s = records / (last commit - first record fetched); the group join and the
   idle wait are not counted (`wall_s` is the whole run, start-up included).
2. Freshness: while the worker runs, records are sent at 1,000 events/s for --replay-s
   seconds; for every record, freshness = the wall time of the commit that made it visible
   in mart_realtime_traffic_minute - the time it was sent (its Kafka timestamp, set by the
   producer). p50 / p95 / max.
3. Memory: the worker process's RSS, sampled every 0.5 s in both runs, and its peak RSS
   as the kernel counts it (`rss_mb_peak`, VmHWM: every instant, not only the samples).
   The worker loads what `tripflow stream` loads (the whole CLI), so the figures are the
   deployed worker's.

The worker runs in its own process (this script with --worker) and writes one JSON line
per committed batch. Prints one JSON object. Targets on the 2-core machine (issue 20):
>= 80,000 events/s, freshness p95 <= 1 s, RSS flat and <= 300 MB; two workers >= 1.6x one.

4. Two workers (`throughput2`): the same topic into a new database, two worker processes
   in the consumer group (as deployed), events_per_s over both; `two_workers_ratio`.
   The workers align event time across each other's partitions too (progress exchanged in
   PostgreSQL), so reading a backlog they run in lockstep, neither more than the slack past
   where the other's unwritten records start. `late_for_hot_share` says how many clicks
   still came late for hot (counted, left to the batch path, cheaper than stored ones:
   13-46 % of them before that alignment), `stored_per_s` counts the clicks stored alone.
CPU: the worker(s)' user + sys seconds (start-up included) and the bench PostgreSQL
server's over the run, per event (steadier than wall time on a shared machine).

Run: PYTHONPATH=src python bench/bench_stream.py [--data DIR] [--home DIR] [--replay-s 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import psycopg


def worker_main(trace: Path, until_idle: float, partitions: str | None) -> None:
    """The worker process: run_stream, one JSON line per commit."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    import tripflow.cli.main  # noqa: F401  (what `tripflow stream` loads: the same footprint)
    from tripflow.processing.stream import StreamOptions, parse_partitions, run_stream
    from tripflow.settings import get_settings

    with trace.open("a", buffering=1) as out:
        def on_commit(report: Any) -> None:
            out.write(json.dumps({"at": report.committed_at, "ends": report.ends,
                                  "records": report.counts.records,
                                  "ms": report.timings_ms}) + "\n")

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        options = StreamOptions(partitions=parse_partitions(partitions))
        summary = run_stream(get_settings(), until_idle, options=options, stop=stop,
                             on_commit=on_commit)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.write(json.dumps({"summary": summary.as_dict(),
                              "cpu_s": usage.ru_utime + usage.ru_stime}) + "\n")


class Sampler(threading.Thread):
    """RSS of a process every 0.5 s, its peak RSS as the kernel counts it (VmHWM: every
    instant, not only the samples), and at the largest sample the split between anonymous
    memory (heaps) and file pages (mostly shared libraries' code)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.samples: list[float] = []
        self.peak = 0.0
        self.split_at_max: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                fields = _status_mb(self.status)
            except OSError:
                return
            rss = fields.get("VmRSS", 0.0)
            if rss == 0:  # exited (a zombie has no memory)
                return
            if rss > max(self.samples, default=0.0):
                self.split_at_max = {"anon": fields["RssAnon"], "file": fields["RssFile"]}
            self.samples.append(rss)
            self.peak = max(self.peak, fields["VmHWM"])
            time.sleep(0.5)


def _status_mb(status: Path) -> dict[str, float]:
    """The memory lines of /proc/PID/status, in MB."""
    fields = {}
    for line in status.read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _cpu_s(pid: int) -> tuple[float, float]:
    """(own CPU, CPU of waited-for children) of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / ticks,
            (int(fields[13]) + int(fields[14])) / ticks)


def pg_cpu_s(home: Path) -> float:
    """CPU seconds used so far by this bench's own PostgreSQL server: the postmaster, its
    live processes (backends, WAL writer, checkpointer...) and those that exited."""
    try:
        postmaster = int((home / "pg" / "postmaster.pid").read_text().splitlines()[0])
        own, exited = _cpu_s(postmaster)
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = own + exited
    for task in Path("/proc").iterdir():
        if not task.name.isdigit():
            continue
        try:
            status = (task / "status").read_text()
            if f"\nPPid:\t{postmaster}\n" in status:
                total += _cpu_s(int(task.name))[0]
        except OSError:
            continue
    return total


def start_worker(env: dict[str, str], trace: Path, until_idle: float | None,
                 partitions: str | None, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--worker", str(trace)]
    if until_idle is not None:
        args += ["--until-idle", str(until_idle)]
    if partitions:
        args += ["--partitions", partitions]
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def read_trace(trace: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    commits, summary = [], None
    for line in trace.read_text().splitlines():
        item = json.loads(line)
        if "summary" in item:
            summary = {**item["summary"], "cpu_s": item.get("cpu_s")}
        else:
            commits.append(item)
    return commits, summary


def rss_figures(sampler: Sampler) -> dict[str, float]:
    samples = sampler.samples
    if not samples:
        return {}
    half = len(samples) // 2
    return {"rss_mb_peak": round(sampler.peak, 1),
            "rss_mb_max": round(max(samples), 1),
            "rss_mb_max_anon_file": [round(sampler.split_at_max.get(k, 0.0), 1)
                                     for k in ("anon", "file")],
            "rss_mb_last": round(samples[-1], 1),
            "rss_mb_max_first_half": round(max(samples[:half] or samples), 1),
            "rss_mb_max_second_half": round(max(samples[half:]), 1)}


def throughput(data: Path, env: dict[str, str], settings: Any, work: Path, home: Path,
               workers: int = 1) -> dict[str, Any]:
    """Stream the produced topic to idle with `workers` workers: one assigned every
    partition directly, several joined in the consumer group (as deployed)."""
    from tripflow.ingestion import produce

    summary = produce([data], settings, servers=1)
    started = time.time()
    pg_before = pg_cpu_s(home)
    procs, samplers, traces = [], [], []
    for i in range(workers):
        name = f"throughput-{workers}w-{i}"
        trace, log = work / f"{name}.jsonl", work / f"{name}.log"
        procs.append((start_worker(env, trace, 5.0, "all" if workers == 1 else None, log), log))
        traces.append(trace)
        samplers.append(Sampler(procs[-1][0].pid))
        samplers[-1].start()
    try:
        for proc, _log in procs:
            proc.wait(timeout=1800)
    finally:
        for sampler in samplers:
            sampler.done.set()
        for proc, _log in procs:
            _end(proc)
    pg_cpu = pg_cpu_s(home) - pg_before
    commits, results = [], []
    for trace, (_proc, log) in zip(traces, procs, strict=True):
        own, result = read_trace(trace)
        assert result is not None, log.read_text()[-3000:]
        commits += own
        results.append(result)
    assert commits, procs[0][1].read_text()[-3000:]
    commits.sort(key=lambda c: c["at"])
    records = sum(c["records"] for c in commits)
    # from the first record fetched: the first commit's time minus its own batch's work
    first_ms = sum(v for k, v in commits[0]["ms"].items())
    begin = commits[0]["at"] - first_ms / 1000
    seconds = commits[-1]["at"] - begin
    worker_cpu = sum(r["cpu_s"] for r in results)
    total = lambda name: sum(r[name] for r in results)  # noqa: E731
    figures = {"workers": workers, "records": records, "produced": summary.delivered,
               "events_per_s": round(records / seconds), "seconds": round(seconds, 1),
               "wall_s": round(time.time() - started, 1), "batches": len(commits),
               "new": total("new"), "duplicates": total("duplicates"),
               "late_for_hot": total("late_for_hot"), "quarantined": total("quarantined"),
               "late_for_hot_share": round(total("late_for_hot") / records, 3),
               "stored_per_s": round(total("new") / seconds),
               "fenced_batches": total("fenced_batches"),
               # CPU (user + sys) of the worker(s), start-up included, and of PostgreSQL
               # over the run: less noisy than wall time on a shared machine
               "worker_cpu_s": round(worker_cpu, 1),
               "cpu_us_per_event": round(worker_cpu / records * 1e6, 1),
               "pg_cpu_s": round(pg_cpu, 1),
               "pg_cpu_us_per_event": round(pg_cpu / records * 1e6, 1),
               "mean_ms_per_batch": _mean_timings(commits)}
    if workers == 1:
        figures.update(rss_figures(samplers[0]))
    else:
        figures["rss_mb_peak_per_worker"] = [round(s.peak, 1) for s in samplers]
    return figures


def _mean_timings(commits: list[dict[str, Any]]) -> dict[str, float]:
    """Mean milliseconds per batch of each step (parse on the main thread, the rest on
    the writer thread: the PostgreSQL transaction's statements)."""
    sums: dict[str, float] = {}
    for commit in commits:
        for name, ms in commit["ms"].items():
            sums[name] = sums.get(name, 0.0) + ms
    return {name: round(ms / len(commits), 1) for name, ms in sums.items()}


def freshness(lines: list[bytes], env: dict[str, str], settings: Any, work: Path,
              seconds: float, rate: float = 1000.0) -> dict[str, Any]:
    from tripflow.ingestion.admin import ensure_topic

    ensure_topic(settings)
    trace, log = work / "freshness.jsonl", work / "freshness.log"
    proc = start_worker(env, trace, None, None, log)  # group mode, as deployed
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        sent = _replay(proc, log, lines, settings, seconds, rate)
    finally:
        sampler.done.set()
        _end(proc)
    return _freshness_figures(trace, sent, rate, seconds, sampler)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop the worker (SIGTERM: it commits what is in flight), kill it if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _replay(proc: subprocess.Popen[bytes], log: Path, lines: list[bytes], settings: Any,
            seconds: float, rate: float) -> list[tuple[int, int, float]]:
    """Send `lines` at `rate` per second once the worker is assigned; delivery records."""
    from confluent_kafka import Producer

    from tripflow.messaging.config import producer_config

    deadline = time.monotonic() + 60
    while "assigned partitions" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    sent: list[tuple[int, int, float]] = []  # partition, offset, send time (s)
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            sent.append((msg.partition(), msg.offset(), msg.timestamp()[1] / 1000))

    count = int(seconds * rate)
    begin = time.monotonic()
    for i in range(count):
        line = lines[i % len(lines)]
        producer.produce(settings.topic, value=line, key=_session(line), on_delivery=delivered)
        ahead = (i + 1) / rate - (time.monotonic() - begin)
        producer.poll(max(ahead, 0))
    producer.flush(60)
    time.sleep(5)  # the last records get committed
    return sent


def _freshness_figures(trace: Path, sent: list[tuple[int, int, float]], rate: float,
                       seconds: float, sampler: Sampler) -> dict[str, Any]:
    commits, _summary = read_trace(trace)
    # per partition, commits in order: a record is visible at the first commit past it
    by_partition: dict[int, list[tuple[int, float]]] = {}
    for commit in commits:
        for p, end in commit["ends"].items():
            by_partition.setdefault(int(p), []).append((end, commit["at"]))
    lags, timeline = [], []
    first_sent = min(sent_at for _p, _o, sent_at in sent)
    for p, offset, sent_at in sent:
        visible = next((at for end, at in by_partition.get(p, []) if end > offset), None)
        assert visible is not None, f"record {p}@{offset} never committed"
        lags.append(visible - sent_at)
        timeline.append((sent_at - first_sent, visible - sent_at))
    worst = max(timeline, key=lambda item: item[1])
    worst_record = max(zip(sent, (lag for _at, lag in timeline), strict=True),
                       key=lambda item: item[1])[0]
    after_warmup = [lag for at, lag in timeline if at >= 5.0]
    lags.sort()
    pick = lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))], 3)  # noqa: E731
    return {"records": len(lags), "rate_per_s": rate, "seconds": seconds,
            "p50_s": pick(0.50), "p95_s": pick(0.95), "max_s": round(lags[-1], 3),
            "max_s_sent_at_s": round(worst[0], 1),
            "max_s_record": f"{worst_record[0]}@{worst_record[1]}",
            "max_s_after_first_5_s": round(max(after_warmup), 3) if after_warmup else None,
            "batches": len(commits), **rss_figures(sampler)}


def _session(line: bytes) -> bytes | None:
    start = line.find(b'"SessionId": "')
    if start < 0:
        return None
    start += len(b'"SessionId": "')
    return line[start:line.find(b'"', start)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--until-idle", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--partitions", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=Path(".tripflow-bench-data/stream-1m"))
    parser.add_argument("--home", type=Path, default=Path(".tripflow-bench"))
    parser.add_argument("--replay-s", type=float, default=60.0)
    parser.add_argument("--only", choices=("throughput", "throughput2", "freshness"))
    parser.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                        help="embedded broker kind (default: tripflow's default)")
    parser.add_argument("--brokers", type=int, default=None, help="Apache Kafka brokers")
    parser.add_argument("--days", type=int, default=100, help="days generated into --data")
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.until_idle, args.partitions)
        return

    from tripflow import services
    from tripflow.records.generate import generate
    from tripflow.settings import Settings

    if not (args.data / "manifest.json").exists():
        generate(args.data, start=date(2016, 1, 1), days=args.days, sessions_per_day=3000,
                 dup_rate=0.005, late_rate=0.002, bad_rate=0.0005, bots=20)
    chosen = {k: v for k, v in (("broker", args.broker), ("brokers", args.brokers)) if v}
    base = Settings(home=args.home, **chosen)
    services.up(base)
    server = services.pg_dsn(base)
    run = uuid.uuid4().hex[:8]
    work = args.home / f"bench-stream-{run}"
    work.mkdir(parents=True)
    results: dict[str, Any] = {}
    for part in [args.only] if args.only else ["throughput", "throughput2", "freshness"]:
        name = f"bench_stream_{part}_{run}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        settings = Settings(home=args.home, pg_dsn=server.rsplit("/", 1)[0] + "/" + name,
                            kafka_bootstrap=services.kafka_bootstrap(base), topic=name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPFLOW_")}
        env.update({"TRIPFLOW_HOME": str(args.home), "TRIPFLOW_PG_DSN": settings.pg_dsn,
                    "TRIPFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                    "TRIPFLOW_TOPIC": settings.topic})
        if part == "throughput":
            results[part] = throughput(args.data, env, settings, work, args.home)
        elif part == "throughput2":
            results[part] = throughput(args.data, env, settings, work, args.home, workers=2)
        else:
            newest = sorted(args.data.glob("????-??-??.json"))[-3:]
            lines = [line for path in newest for line in path.read_bytes().split(b"\n") if line]
            results[part] = freshness(lines, env, settings, work, args.replay_s)
    if "throughput" in results and "throughput2" in results:
        results["two_workers_ratio"] = round(results["throughput2"]["events_per_s"]
                                             / results["throughput"]["events_per_s"], 2)
    results["targets"] = {"events_per_s": ">= 80000", "freshness_p95_s": "<= 1",
                          "rss_mb": "flat, <= 300", "two_workers_ratio": ">= 1.6"}
    results["broker"] = {"kind": services.broker_kind(base), "brokers": args.brokers or 1}
    results["machine"] = {"cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
