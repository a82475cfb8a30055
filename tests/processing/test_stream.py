"""`tripflow stream` end to end: real broker, real PostgreSQL, the real command."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import psycopg

from tests.kits import hot_reference as ref
from tests.kits.hot_checks import assert_marts_equal
from tests.kits.hot_data import click_line, create_topic, dataset, ms_of, produce, session_id
from tests.kits.hot_workers import Worker, kill_leftovers
from tripflow.settings import Settings


def test_stream_to_idle_then_resume_from_stored_offsets(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli, tmp_path: Path) -> None:
    lines = dataset(tmp_path / "gen", days=1, sessions_per_day=300, bots=2)
    clicks, bad = ref.distinct_clicks(lines, int(time.time() * 1000))
    assert settings.kafka_bootstrap and settings.pg_dsn
    create_topic(settings.kafka_bootstrap, settings.topic, 3)
    produce(settings.kafka_bootstrap, settings.topic, lines)

    result = tripflow_cli("stream", "--until-idle", "2", "--partitions", "all",
                          env=tripflow_env, timeout=180)
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"stream: {len(lines):,} records in,"), result.stdout
    assert f"{len(clicks):,} new" in summary and f"{bad:,} quarantined" in summary
    assert re.search(r"in [0-9.]+ s", summary)
    assert_marts_equal(settings.pg_dsn, list(clicks.values()), records=len(lines), bad=bad)

    # Again, as a member of the consumer group: it resumes at the stored offsets (after
    # checking the record before them is the one it stored), so nothing is read twice.
    again = tripflow_cli("stream", "--until-idle", "2", env=tripflow_env, timeout=180)
    assert again.stdout.strip().splitlines()[-1].startswith("stream: 0 records in"), \
        again.stdout + again.stderr
    assert "assigned partitions" in again.stderr
    assert_marts_equal(settings.pg_dsn, list(clicks.values()), records=len(lines), bad=bad)

    status = tripflow_cli("status", env=tripflow_env, timeout=120).stdout
    assert "hot path" in status and "event-time clock: 2016-03-01" in status
    assert f"hot store: {len(clicks):,} clicks" in status
    assert "known end" in status and "0 late for hot" in status


def test_two_workers_reading_a_backlog_stay_within_the_horizon_of_each_other(
        settings: Settings, tripflow_env: dict[str, str], tmp_path: Path) -> None:
    """A slow worker and a fast one read a backlog of 10 days of clicks in time order (48 h
    horizon). The fast one waits for the slow one's partition (their progress is exchanged
    in PostgreSQL), so none of the slow one's clicks arrives late for hot."""
    rng = random.Random(3)
    start = ms_of("2016-05-01T00:00:00")
    step = 10 * 86_400_000 // 8000  # one click every 108 s: 48 h hold 1,600
    lines = [click_line(session_id(rng), 1 + i % 500, start + i * step) for i in range(8000)]
    assert settings.kafka_bootstrap and settings.pg_dsn
    create_topic(settings.kafka_bootstrap, settings.topic, 2)
    idle = ["--until-idle", "8"]
    try:
        workers = [  # tiny batches make the first one slow: it could not keep up alone
            Worker(tripflow_env, ["--partitions", "0", "--batch-records", "50",
                                  "--batch-ms", "20", *idle], tmp_path / "slow.log"),
            Worker(tripflow_env, ["--partitions", "1", *idle], tmp_path / "fast.log")]
        # Both have published their (empty) partitions' progress: then the backlog arrives,
        # faster than the slow one reads it.
        deadline = time.monotonic() + 90
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            while conn.execute("select count(*) from pg_tables where tablename = "
                               "'hot_progress'").fetchone()[0] == 0 or conn.execute(
                    "select count(*) from tripflow.hot_progress where topic = %s",
                    (settings.topic,)).fetchone()[0] < 2:
                assert time.monotonic() < deadline and all(w.alive() for w in workers), \
                    [w.text()[-3000:] for w in workers]
                time.sleep(0.2)
        produce(settings.kafka_bootstrap, settings.topic, lines)
        assert [w.proc.wait(timeout=240) for w in workers] == [0, 0], \
            [w.text()[-3000:] for w in workers]
    finally:
        kill_leftovers()
    with psycopg.connect(settings.pg_dsn) as conn:
        state = conn.execute("select records, clicks_new, duplicates, late_for_hot, "
                             "quarantined from tripflow.hot_state").fetchone()
    assert state == (8000, 8000, 0, 0, 0), [w.text()[-2000:] for w in workers]
