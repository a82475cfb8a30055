"""`tripflow stream` end to end: real broker, real PostgreSQL, the real command."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.kits import hot_reference as ref
from tests.kits.hot_checks import assert_marts_equal
from tests.kits.hot_data import create_topic, dataset, produce
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
