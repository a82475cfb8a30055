"""The whole pipeline as commands on generated TripClick-style data (bad lines, unknown
areas, late clicks, duplicates, a bot): every check passes and is stored, the hot/cold
drift included; then one corrupted mart row, and one lost silver file, each make
`tripflow quality` fail naming the check."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tripflow import db
from tripflow.quality.checks import CHECKS
from tripflow.settings import Settings

FIRST_HOUR = """
update mart_hourly_traffic set clicks = clicks {sign} 1
where (event_date, event_hour) = (select event_date, event_hour from mart_hourly_traffic
                                  order by 1, 2 limit 1)"""


def _failed_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("failed:"))


def test_generated_data_passes_every_check_and_corruption_fails_it(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = tripflow_env
    days = tmp_path / "days"
    tripflow_cli("generate", "--out", str(days), "--start", "2016-03-01", "--days", "3",
                 "--seed", "11", "--sessions-per-day", "150", "--dup-rate", "0.01",
                 "--late-rate", "0.01", "--bad-rate", "0.005", "--bots", "1", env=env)
    tripflow_cli("produce", str(days), env=env)
    tripflow_cli("stream", "--until-idle", "3", "--partitions", "all", env=env)
    tripflow_cli("bronze", "--until-idle", "3", "--partitions", "all", env=env)
    silver = tripflow_cli("silver", env=env).stdout
    assert "quality: 5 checks over 3 dates, 0 failed" in silver  # its own layer's checks
    marts = tripflow_cli("marts", "--changed", env=env).stdout
    assert "quality: 4 checks over 3 dates, 0 failed" in marts

    ok = tripflow_cli("quality", env=env).stdout
    assert f"quality: {len(CHECKS)} checks over every date, 0 failed, 0 warned" in ok
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        rows = conn.execute("select check_name, status, observed from tripflow.quality_results "
                            "where event_date is null and run_id = (select run_id from "
                            "tripflow.quality_results order by checked_at desc limit 1)"
                            ).fetchall()
        hot_dates = conn.execute("select count(distinct event_date) from "
                                 "tripflow.reconciliation where minutes_in_hot > 0").fetchone()
    assert {r[0] for r in rows} == {c.name for c in CHECKS}
    assert {r[1] for r in rows} == {"pass"}
    # The data holds what the rate checks measure, and the hot path had every date.
    observed = {name: float(value) for name, _, value in rows}
    assert observed["silver.unmapped_area_rate"] > 0
    assert observed["silver.quarantine_rate"] > 0
    assert hot_dates == (3,)

    # What Prometheus and the "Pipeline health" dashboard read of it.
    metrics = tripflow_cli("metrics", "--once", env=env).stdout
    assert ('tripflow_quality_check_failed{check="gold.hourly_sums_match_daily",layer="gold",'
            'severity="fail"} 0.0') in metrics.splitlines()
    assert "tripflow_hot_records_waiting 0.0" in metrics.splitlines()
    with psycopg.connect(db.reader_dsn(settings, settings.pg_dsn)) as conn:  # type: ignore[arg-type]
        seen = {view: conn.execute(f"select count(*) from {view}").fetchone()[0]  # type: ignore[index]
                for view in ("health_quality_results", "health_drift", "health_freshness",
                             "health_quarantine", "health_consumer_lag")}
        drift = conn.execute("select max(drift_rate) from health_drift").fetchone()[0]  # type: ignore[index]
    assert seen["health_drift"] == 3 and seen["health_freshness"] == 1
    assert seen["health_consumer_lag"] == settings.topic_partitions  # one sample per partition
    # silver's 5 checks, the marts' 4 (gold), then every check
    assert seen["health_quality_results"] == 5 + 4 + len(CHECKS)
    assert seen["health_quarantine"] >= 1
    assert round(drift, 6) == observed["gold.hot_cold_drift"]  # the check's worst date

    # One corrupted mart row.
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(FIRST_HOUR.format(sign="+"))
    bad = tripflow_cli("quality", env=env, check=False)
    assert bad.returncode == 1
    assert _failed_line(bad.stdout) == "failed: gold.hourly_sums_match_daily"

    # One lost silver file (the mart row is right again).
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(FIRST_HOUR.format(sign="-"))
    sorted((Path(settings.lake) / "silver" / "clicks").rglob("*.parquet"))[0].unlink()
    lost = tripflow_cli("quality", env=env, check=False)
    assert lost.returncode == 1
    assert _failed_line(lost.stdout) == \
        "failed: gold.daily_totals_match_silver, silver.files_present"
