"""The batch path under SIGKILL: each step runs as the real `tripflow` command, is killed at
random moments (≥ 10 real kills per step), then rerun to completion, and what it left is
compared with values computed independently from the generated files (batchkit).

After every kill the layer must already be consistent: bronze holds a gap-free prefix of
each partition with no duplicate; each silver date is absent or complete; the PostgreSQL
marts are all empty or all complete (one transaction). Set TRIPFLOW_KILL_SEED to replay a
run's kill moments.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from tests.kits import batchkit
from tests.spec_records import spec_record
from tripflow import lake
from tripflow.messaging.config import producer_config
from tripflow.processing.bronze import run_bronze
from tripflow.processing.silver import run_silver
from tripflow.records.articles import read_articles
from tripflow.records.generate import Manifest, generate
from tripflow.settings import Settings

START = dt.date(2016, 1, 1)
KILLS = 10
SEED = int(os.environ.get("TRIPFLOW_KILL_SEED", time.time_ns() % 2**32))


def tripflow_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "tripflow", *args]


class Dataset:
    """Generated day files + edge-case lines, produced to the test's topic."""

    def __init__(self, folder: Path, settings: Settings, chunks: int = 1) -> None:
        self.settings = settings
        self.manifest: Manifest = generate(
            folder, start=START, days=3, seed=7, sessions_per_day=120, dup_rate=0.03,
            late_rate=0.03, bad_rate=0.02, bots=1)
        self.extra = batchkit.edge_lines(START + dt.timedelta(days=3))
        self.lines = batchkit.file_lines(batchkit.day_files(folder)) + self.extra
        self.articles_path = folder / "allarticles.txt"
        size = -(-len(self.lines) // chunks)
        self.pending = [self.lines[i:i + size] for i in range(0, len(self.lines), size)]
        self.sent: list[batchkit.Sent] = []
        self.producer: Producer | None = None
        self.produce_next()
        if chunks == 1:
            self.finish()

    def produce_next(self) -> None:
        """Publish the next chunk of lines (the topic grows while a step runs)."""
        if self.pending:
            self.sent += batchkit.produce(self.settings, self.pending.pop(0), partitions=3,
                                          create=not self.sent, producer=self.producer)
            self.producer = self.producer or Producer(
                producer_config(self.settings, **{"linger.ms": 5}))

    def finish(self) -> None:
        while self.pending:
            self.produce_next()
        self.producer = None  # the client closes now, not after the broker is gone
        self.truth = batchkit.truth(self.sent)
        self.dates = self.truth.dates
        self.span = f"{self.dates[0]}..{self.dates[-1]}"


@pytest.fixture
def data(tmp_path: Path, settings: Settings) -> Dataset:
    return Dataset(tmp_path / "gen", settings)


def kill_loop(args: Callable[[int], list[str]], env: dict[str, str], delays: tuple[float, float],
              *, kills: int = KILLS, before: Callable[[int], None] | None = None,
              after_kill: Callable[[int], None] | None = None,
              max_runs: int = 40) -> tuple[int, int]:
    """Start the command, SIGKILL it after a random delay, repeat until `kills` real kills.
    Returns (kills, runs that finished before their kill)."""
    rng = random.Random(SEED)
    killed = finished = 0
    took: list[float] = []  # seconds of the runs that finished before their kill
    for i in range(max_runs):
        if killed >= kills:
            break
        if before:
            before(i)
        started = time.monotonic()
        proc = subprocess.Popen(args(i), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=rng.uniform(*delays))
            assert proc.returncode == 0, f"run {i} failed (seed {SEED}): {err.decode()[-2000:]}"
            finished += 1
            took.append(round(time.monotonic() - started, 2))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            killed += 1
            if after_kill:
                after_kill(i)
    assert killed >= kills, (f"only {killed} kills in {max_runs} runs (seed {SEED}); "
                             f"the others finished in {sorted(took)} s")
    print(f"{args(0)[3]}: {killed} kills, {finished} runs finished first (seed {SEED})")
    return killed, finished


def kill_window(args: list[str], env: dict[str, str], before: Callable[[int], None],
                runs: int = 2) -> tuple[float, float]:
    """Kill moments for a step whose runs all do the same work (`before` resets the state
    each time): from 40 % of the time one run takes to the end (a fixed window would let a
    faster machine finish every run before its kill). The fastest of `runs` runs: a first
    run slowed by cold caches set a window that 34 of 40 later runs outlived."""
    took = []
    for i in range(runs):
        before(i)
        started = time.monotonic()
        subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       check=True, timeout=300)
        took.append(time.monotonic() - started)
    return 0.4 * min(took), min(took)


# -- bronze ------------------------------------------------------------------------------------
def bronze_rows(settings: Settings) -> dict[int, list[tuple[int, bytes]]]:
    table = lake.open_table(settings, lake.BRONZE)
    if table is None:
        return {}
    rows = table.to_pyarrow_table(columns=["partition", "offset", "value"])
    per_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for p, o, v in zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True):
        per_partition[p].append((o, v))
    return {p: sorted(items) for p, items in per_partition.items()}


def check_bronze_prefix(settings: Settings, data: Dataset, complete: bool) -> None:
    produced: dict[int, dict[int, bytes]] = defaultdict(dict)
    for s in data.sent:
        produced[s.partition][s.offset] = s.line
    for p, items in bronze_rows(settings).items():
        offsets = [o for o, _ in items]
        # Exactly once at every instant: offsets 0..n-1, each once, bytes as produced.
        assert offsets == list(range(len(offsets))), f"partition {p} (seed {SEED})"
        assert all(produced[p][o] == v for o, v in items), f"partition {p} (seed {SEED})"
        if complete:
            assert len(offsets) == len(produced[p])
    if complete:
        assert set(bronze_rows(settings)) == set(produced)


def test_bronze_survives_kills(settings: Settings, tripflow_env: dict[str, str],
                               tmp_path: Path) -> None:
    env = tripflow_env
    rng = random.Random(SEED + 1)
    # The topic grows between runs, so every run has new records to write when killed.
    data = Dataset(tmp_path / "gen", settings, chunks=KILLS + 4)
    # First a run in the consumer group (subscribe, rebalance callback, resume from the
    # Delta versions), killed once it has joined and started writing.
    proc = subprocess.Popen(tripflow_args("bronze", "--until-idle", "1", "--batch-rows", "25"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(3.5, 5.0))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    check_bronze_prefix(settings, data, complete=False)

    # Then runs that assign the partitions directly (no group-join delay; resuming is the
    # same), killed at random moments.
    def args(_: int) -> list[str]:
        return tripflow_args("bronze", "--until-idle", "1", "--batch-rows", "25",
                             "--partitions", "all")

    kill_loop(args, env, (1.0, 2.5), before=lambda _: data.produce_next(),
              after_kill=lambda _: check_bronze_prefix(settings, data, complete=False))
    data.finish()
    result = subprocess.run(tripflow_args("bronze", "--until-idle", "1", "--partitions", "all"),
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_bronze_prefix(settings, data, complete=True)
    # Every record once; rerunning finds nothing new.
    again = run_bronze(settings, until_idle=0.5, partitions=())
    assert again.written == 0
    check_bronze_prefix(settings, data, complete=True)


# -- silver ------------------------------------------------------------------------------------
def silver_by_date(settings: Settings) -> dict[dt.date, set[tuple]]:
    table = lake.open_table(settings, lake.SILVER)
    if table is None:
        return {}
    rows = table.to_pyarrow_table(columns=["event_date", "session_id", "document_id",
                                           "event_ts", "kafka_partition", "kafka_offset"])
    ms = pc.cast(pc.cast(rows.column("event_ts"), pa.timestamp("ms", tz="UTC")), pa.int64())
    found: dict[dt.date, set[tuple]] = defaultdict(set)
    for day, sid, doc, t, p, o in zip(rows.column("event_date").to_pylist(),
                                      rows.column("session_id").to_pylist(),
                                      rows.column("document_id").to_pylist(), ms.to_pylist(),
                                      rows.column("kafka_partition").to_pylist(),
                                      rows.column("kafka_offset").to_pylist(), strict=True):
        found[day].add((sid, doc, t, p, o))
    # No row twice: a set of the same size as the table.
    assert sum(len(v) for v in found.values()) == rows.num_rows
    return dict(found)


def expected_silver(data: Dataset) -> dict[dt.date, set[tuple]]:
    want: dict[dt.date, set[tuple]] = defaultdict(set)
    for c in data.truth.clicks:
        want[c.date].add((c.session_id, c.document_id, c.ms, c.partition, c.offset))
    return dict(want)


def quarantine_counts(settings: Settings) -> tuple[dict[str, int], int]:
    """Bad records seen per reason (a bad line sent twice is one record seen twice), and
    the distinct bad records."""
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        seen = dict(conn.execute("select reason, sum(seen_count)::int from tripflow.quarantine "
                                 "group by reason").fetchall())
        (distinct,) = conn.execute("select count(*) from tripflow.quarantine").fetchone()
    return seen, distinct


def test_silver_survives_kills(settings: Settings, tripflow_env: dict[str, str],
                               data: Dataset) -> None:
    run_bronze(settings, until_idle=1, partitions=())
    want = expected_silver(data)
    silver_dir = Path(lake.table_uri(settings, lake.SILVER))

    def args(i: int) -> list[str]:
        # One Delta commit per date (small chunks), alternating incremental and range runs.
        which = ["--changed"] if i % 2 else ["--dates", data.span]
        return tripflow_args("silver", *which, "--chunk-rows", "50")

    def reset(_: int) -> None:
        # Start each run from an empty silver: after a kill every date must be absent or
        # complete (atomic per date), never partial.
        shutil.rmtree(silver_dir, ignore_errors=True)

    def check(_: int) -> None:
        for day, rows in silver_by_date(settings).items():
            assert rows == want.get(day, set()), f"{day} partial after a kill (seed {SEED})"

    kill_loop(args, tripflow_env, kill_window(args(0), tripflow_env, reset), before=reset,
              after_kill=check)
    result = subprocess.run(tripflow_args("silver", "--changed"), env=tripflow_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert silver_by_date(settings) == want
    # Ground truth of the generator: distinct clicks per event date (late clicks under
    # their true date), duplicates gone.
    per_day = {day: len(rows) for day, rows in want.items()}
    for day, truth in data.manifest.days.items():
        extra = sum(1 for c in data.truth.clicks if c.date == dt.date.fromisoformat(day)
                    and c.session_id[:3] in ("tie", "mid", "tit", "sam", "arr"))
        assert per_day[dt.date.fromisoformat(day)] - extra == truth.clicks
    # valid + quarantined + duplicates = lines produced; reasons as in the manifest.
    counts, distinct = quarantine_counts(settings)
    valid = sum(per_day.values())
    assert valid + sum(counts.values()) + data.truth.duplicates == len(data.lines)
    assert counts == {r: n for r, n in data.manifest.totals.bad.items() if n}
    now_ms = int(time.time() * 1000)
    assert distinct == len({line for line in data.lines if spec_record(line, now_ms) is None})
    assert data.truth.duplicates == data.manifest.totals.duplicates + 1  # + the edge resend
    # The run log has a row per run, killed ones still 'running'.
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        statuses = dict(conn.execute(
            "select status, count(*) from tripflow.run_log where step = 'silver' "
            "group by status").fetchall())
    assert statuses.get("ok", 0) >= 1


# -- marts -------------------------------------------------------------------------------------
MARTS = ["mart_session_analysis", "mart_daily_traffic", "mart_clinical_areas",
         "mart_popular_documents", "mart_hourly_traffic"]
INDEXES = ("select tablename, indexname, indexdef from pg_indexes where tablename = any(%s) "
           "order by 1, 2")


def test_marts_survive_kills(settings: Settings, tripflow_env: dict[str, str],
                             data: Dataset) -> None:
    run_bronze(settings, until_idle=1, partitions=())
    run_silver(settings, changed=True)
    want = batchkit.expected_marts(data.truth.clicks)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        def args(i: int) -> list[str]:
            which = ["--changed"] if i % 3 == 1 else ["--dates", data.span]
            return tripflow_args("marts", *which, "--chunk-rows", "400")

        def reset(_: int) -> None:
            # Old state = empty marts, and --changed forced to redo everything.
            conn.execute(f"truncate {', '.join(MARTS)}, mart_realtime_traffic_minute")
            conn.execute("delete from tripflow.batch_state where step = 'marts'")

        def check(_: int) -> None:
            found = {m: batchkit.pg_mart_rows(conn, m) for m in MARTS}
            empty = all(not rows for rows in found.values())
            complete = all(found[m] == want[m] for m in MARTS)
            assert empty or complete, f"marts half-written after a kill (seed {SEED})"

        # A first build loads without the marts' indexes (marts/load.py): killed, it must
        # leave them as they were.
        indexes = conn.execute(INDEXES, (MARTS,)).fetchall()
        kill_loop(args, tripflow_env, kill_window(args(0), tripflow_env, reset),
                  before=reset, after_kill=check)
        assert conn.execute(INDEXES, (MARTS,)).fetchall() == indexes
        result = subprocess.run(tripflow_args("marts", "--changed"), env=tripflow_env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert conn.execute(INDEXES, (MARTS,)).fetchall() == indexes  # made again
        for mart in MARTS:
            assert batchkit.pg_mart_rows(conn, mart) == want[mart], mart
        # Reconciliation: the hot minute mart now holds silver's exact minutes.
        assert batchkit.pg_mart_rows(conn, "traffic_minute") == want["traffic_minute"]
        # Gold holds the same rows as PostgreSQL.
        for mart in MARTS:
            gold = DeltaTable(lake.table_uri(settings, lake.gold(mart))).to_pyarrow_table()
            assert gold.num_rows == len(want[mart]), mart

        # With the catalogue loaded, titles come from it (rebuild by dates).
        subprocess.run(tripflow_args("articles", str(data.articles_path)), env=tripflow_env,
                       check=True, capture_output=True, timeout=120)
        result = subprocess.run(tripflow_args("marts", "--dates", data.span), env=tripflow_env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        catalogue = read_articles(data.articles_path)
        titles = dict(zip(catalogue.column("document_id").to_pylist(),
                          catalogue.column("title").to_pylist(), strict=True))
        assert batchkit.UNKNOWN_DOC not in titles
        with_titles = batchkit.expected_marts(data.truth.clicks, titles)
        assert batchkit.pg_mart_rows(conn, "mart_popular_documents") == \
            with_titles["mart_popular_documents"]
        # A rebuild of identical data changes no minute of the hot mart.
        (changed,) = conn.execute(
            "select sum(minutes_changed + minutes_deleted) from tripflow.reconciliation "
            "where reconciled_at = (select max(reconciled_at) from tripflow.reconciliation)"
        ).fetchone()
        assert changed == 0
