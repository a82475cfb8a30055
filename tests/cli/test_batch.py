"""The batch commands as a user runs them: one-line summaries, `tripflow status`, and
errors that say what went wrong and what to do."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.kits import batchkit
from tripflow.settings import Settings

DAY = dt.date(2016, 1, 1)


def test_bronze_silver_marts_status_and_backfill(settings: Settings, tripflow_env: dict[str, str],
                                                 tripflow_cli, tmp_path: Path) -> None:
    lines = [batchkit.record(batchkit.at(DAY, h), f"s{h % 4:023d}", h) for h in range(24)]
    batchkit.produce(settings, [*lines, b"not json"], partitions=2)
    env = tripflow_env
    out = tripflow_cli("bronze", "--until-idle", "1", "--partitions", "all", env=env).stdout
    assert "bronze: 25 records read, 25 written" in out
    out = tripflow_cli("silver", env=env).stdout
    assert "silver: 1 dates (2016-01-01), 25 bronze rows in, 24 clicks out" in out
    assert "1 quarantined" in out
    out = tripflow_cli("marts", "--changed", env=env).stdout
    assert "marts (duckdb): 1 dates (2016-01-01)" in out and "mart_daily_traffic 1" in out
    out = tripflow_cli("backfill", "--from", "2016-01-01", "--to", "2016-01-02", env=env).stdout
    assert "silver: 2 dates (2016-01-01..2016-01-02)" in out and "marts (duckdb): 2 dates" in out
    articles = tmp_path / "allarticles.txt"
    articles.write_text("id\ttitle\turl\n3\tThree\thttp://x\n(1 rows affected)\n")
    out = tripflow_cli("articles", str(articles), env=env).stdout
    assert "1 distinct documents loaded" in out
    out = tripflow_cli("status", env=env).stdout
    for expected in ("runs", "bronze", "silver", "marts", "backfill", "lake",
                     "silver/clicks", "gold/mart_daily_traffic", "PostgreSQL",
                     "mart_popular_documents", "quarantine: not_json 1"):
        assert expected in out, expected


def test_errors_say_what_to_do(settings: Settings, tripflow_env: dict[str, str],
                               tripflow_cli) -> None:
    env = tripflow_env
    result = tripflow_cli("bronze", "--until-idle", "1", "--partitions", "all", env=env,
                          check=False)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert "tripflow produce" in result.stderr
    result = tripflow_cli("silver", "--dates", "2016-13-01", env=env, check=False)
    assert result.returncode == 2 and "expected YYYY-MM-DD" in result.stderr
    result = tripflow_cli("silver", "--dates", "2016-01-01", "--changed", env=env, check=False)
    assert result.returncode == 2 and "not both" in result.stderr
    result = tripflow_cli("marts", "--dates", "2016-01-01", "--engine", "flink", env=env,
                          check=False)
    assert result.returncode == 2 and "unknown engine 'flink'" in result.stderr
    result = tripflow_cli("backfill", "--from", "2016-01-02", "--to", "2016-01-01", env=env,
                          check=False)
    assert result.returncode == 2 and "before it starts" in result.stderr
