"""`tripflow quality` on the real database and lake: generated data (bad lines, unknown
areas, late clicks, duplicates) passes every check and is stored; a corrupted mart row or a
lost silver file fails the run, naming the check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.kits import batchkit
from tripflow.marts import run_marts
from tripflow.processing.silver import run_silver
from tripflow.quality.checks import CHECKS
from tripflow.quality.run import run_quality
from tripflow.records.generate import generate
from tripflow.settings import Settings

START = dt.date(2016, 3, 1)
DAYS = 3


@pytest.fixture
def built(settings: Settings, tmp_path: Path) -> Settings:
    """Three generated days through bronze, silver and the cold marts."""
    out = tmp_path / "days"
    generate(out, start=START, days=DAYS, seed=7, sessions_per_day=150, dup_rate=0.01,
             late_rate=0.01, bad_rate=0.005, bots=1)
    lines = batchkit.file_lines(batchkit.day_files(out))
    batchkit.write_bronze(settings, lines, partitions=3)
    run_silver(settings)
    run_marts(settings)
    return settings


def stored(settings: Settings, run_id: object) -> list[tuple]:
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        return conn.execute(
            "select check_name, layer, event_date, severity, status, observed, threshold "
            "from tripflow.quality_results where run_id = %s", (run_id,)).fetchall()


def test_every_check_passes_on_generated_data_and_is_stored(built: Settings) -> None:
    report = run_quality(built)
    assert {r.check for r in report.results} == {c.name for c in CHECKS}
    not_passed = [r for r in report.results if not r.passed]
    assert not_passed == []
    rows = stored(built, report.run_id)
    assert len(rows) == len(report.results)
    assert {r[0] for r in rows} == {c.name for c in CHECKS}
    assert all(r[4] == "pass" and r[3] in ("warn", "fail") for r in rows)
    # The generated data does hold what the rate checks measure, under their thresholds.
    by_name = {r.check: r for r in report.results if r.event_date is None}
    assert by_name["silver.unmapped_area_rate"].observed > 0  # type: ignore[operator]
    assert by_name["silver.quarantine_rate"].observed > 0  # type: ignore[operator]


def test_a_corrupted_mart_row_fails_the_command_naming_the_check(
        built: Settings, tripflow_env: dict[str, str], tripflow_cli) -> None:  # type: ignore[no-untyped-def]
    ok = tripflow_cli("quality", "--dates", f"{START}..{START + dt.timedelta(days=DAYS - 1)}",
                      env=tripflow_env)
    assert "0 failed" in ok.stdout
    with psycopg.connect(built.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("update mart_daily_traffic set total_events = total_events + 1 "
                     "where event_date = %s", (START,))
    bad = tripflow_cli("quality", "--layer", "gold", env=tripflow_env, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed_line = next(line for line in bad.stdout.splitlines() if line.startswith("failed:"))
    assert "gold.daily_totals_match_silver" in failed_line
    assert "gold.hourly_sums_match_daily" in failed_line
    # --layer gold ran only the gold checks.
    assert "silver.dedup_key_unique" not in bad.stdout


def test_a_lost_silver_file_fails_the_daily_totals_check(built: Settings) -> None:
    silver = Path(built.lake) / "silver" / "clicks"
    victim = sorted(silver.rglob("*.parquet"))[0]
    day = dt.date.fromisoformat(victim.parent.name.removeprefix("event_date="))
    victim.unlink()
    report = run_quality(built, [day], layers=["silver", "gold"])
    failed = {r.check for r in report.failed}
    assert "gold.daily_totals_match_silver" in failed
    assert "silver.files_present" in failed
    per_date = [r for r in report.failed
                if r.check == "gold.daily_totals_match_silver" and r.event_date == day]
    assert len(per_date) == 1 and per_date[0].observed > 0  # type: ignore[operator]
    statuses = {(r[0], r[2], r[4]) for r in stored(built, report.run_id)}
    assert ("gold.daily_totals_match_silver", day, "fail") in statuses


def test_footers_are_read_only_for_the_counts_a_check_uses(
        built: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bronze's and silver's checks scan the files (DuckDB) without reading their footers
    first; only gold's totals check counts rows from silver's footers."""
    import pyarrow.parquet as pq

    from tripflow.quality import checks

    opened: list[str] = []

    class CountingParquetFile(pq.ParquetFile):
        def __init__(self, source, *args, **kwargs):  # type: ignore[no-untyped-def]
            opened.append(str(getattr(source, "path", source)))
            super().__init__(source, *args, **kwargs)

    monkeypatch.setattr(checks.pq, "ParquetFile", CountingParquetFile)
    report = run_quality(built, layers=["bronze", "silver"])
    assert report.failed == [] and opened == []
    report = run_quality(built, layers=["gold"])
    silver_files = sorted((Path(built.lake) / "silver" / "clicks").rglob("*.parquet"))
    assert report.failed == [] and len(opened) == len(silver_files) > 0


def test_changed_checks_only_what_silver_changed_since_the_last_changed_run(
        built: Settings) -> None:
    first = run_quality(built, changed=True)
    assert first.dates == [START + dt.timedelta(days=i) for i in range(DAYS)]
    assert run_quality(built, changed=True).dates == []
    late = batchkit.record(batchkit.at(START, 20), "late" * 6, 4242)
    batchkit.write_bronze(built, [late], partitions=3)
    run_silver(built)
    run_marts(built)
    again = run_quality(built, changed=True)
    assert again.dates == [START] and again.failed == []


def test_offset_gaps_and_stale_hot_path_warn_without_failing_the_run(built: Settings) -> None:
    # A gap in one partition (a later batch starting above where the log was).
    batchkit.write_bronze(built, [batchkit.record(batchkit.at(START, 21), "gap" * 8, 4343)],
                          partitions=3, first_offsets=[10_000, 10_000, 10_000])
    with psycopg.connect(built.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("update tripflow.hot_state set last_commit_at = now() - interval '2 hours'")
    report = run_quality(built, layers=["bronze", "hot"])
    warned = {r.check: r for r in report.warnings}
    assert set(warned) == {"bronze.offsets_contiguous", "hot.freshness"}
    assert warned["bronze.offsets_contiguous"].observed > 0  # type: ignore[operator]
    assert report.failed == []



def test_drift_counts_only_dates_the_hot_mart_had(built: Settings) -> None:
    # The batch-only build reconciled dates the hot mart did not have: nothing to compare
    # (not 100 % drift).
    batch_only = run_quality(built, layers=["gold"])
    drift = [r for r in batch_only.results if r.check == "gold.hot_cold_drift"]
    assert [(r.passed, r.observed, r.detail) for r in drift] == [(True, 0, "no dates to check")]
    day = START + dt.timedelta(days=1)
    # The hot mart now holds the day's minutes; make one in ten wrong, as a hot path that
    # missed clicks would, and rebuild the day: reconciliation rewrites exactly those.
    with psycopg.connect(built.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        minutes, = conn.execute(
            "select count(*) from mart_realtime_traffic_minute "
            "where (event_minute at time zone 'UTC')::date = %s", (day,)).fetchone()
        wrong = conn.execute(
            "update mart_realtime_traffic_minute set total_clicks = total_clicks + 1 "
            "where (event_minute at time zone 'UTC')::date = %s "
            "and extract(minute from event_minute)::int %% 10 = 0", (day,)).rowcount
    assert minutes > 0 and wrong / minutes > 0.05
    run_marts(built, [day])
    report = run_quality(built, layers=["gold"])
    drift = [r for r in report.results if r.check == "gold.hot_cold_drift"]
    assert [(r.event_date, r.passed, r.observed) for r in drift] == [
        (None, False, round(wrong / minutes, 6)), (day, False, round(wrong / minutes, 6))]
    assert drift[1].detail == f"{wrong:,} of {minutes:,} minutes rewritten"
    assert report.failed == []  # a warning: reconciliation has corrected the minutes


def test_a_repeated_key_and_a_misdated_row_fail_the_silver_checks_with_exact_counts(
        built: Settings) -> None:
    from deltalake import write_deltalake

    from tripflow import lake

    uri = lake.table_uri(built, lake.SILVER)
    first = lake.open_table(built, lake.SILVER).to_pyarrow_dataset().to_table(  # type: ignore[union-attr]
        filter=pc.field("event_date") == pa.scalar(START, pa.date32())).slice(0, 2)
    repeat = first.slice(0, 1)  # the same click twice
    next_day = START + dt.timedelta(days=1)
    misdated = first.slice(1, 1).set_column(
        first.schema.get_field_index("event_date"), "event_date",
        pa.array([next_day], pa.date32())).set_column(
        first.schema.get_field_index("dedup_key"), "dedup_key", pa.array(["f" * 16]))
    for rows in (repeat, misdated):
        write_deltalake(uri, rows.cast(first.schema), mode="append", partition_by=["event_date"])
    report = run_quality(built, layers=["silver"])
    summary = {r.check: r for r in report.results if r.event_date is None}
    assert {r.check for r in report.failed} == {"silver.dedup_key_unique",
                                                  "silver.event_date_is_utc_date"}
    total = sum(lake.rows_per_date(lake.open_table(built, lake.SILVER)).values())  # type: ignore[arg-type]
    assert summary["silver.dedup_key_unique"].observed == 1
    assert summary["silver.dedup_key_unique"].detail == f"{total:,} rows: 0 null, 1 repeated"
    assert summary["silver.event_date_is_utc_date"].observed == 1
    assert summary["silver.event_date_is_utc_date"].detail == \
        f"1 of {total:,} rows on another date ({next_day})"


def test_a_mart_without_its_primary_key_fails_the_key_check(built: Settings) -> None:
    with psycopg.connect(built.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("alter table mart_daily_traffic drop constraint mart_daily_traffic_pkey")
    report = run_quality(built, layers=["gold"])
    keys = [r for r in report.failed if r.check == "gold.mart_keys_unique"]
    assert [(r.observed, r.detail) for r in keys] == [(1, "mart_daily_traffic: no primary key")]
