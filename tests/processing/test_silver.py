"""Silver: dedup and parsing of bronze rows (unit), and runs over a bronze table written
directly (no broker): --changed, explicit dates, undated rows handled once, purity."""

from __future__ import annotations

import datetime as dt
import shutil

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.kits import batchkit
from tripflow import lake
from tripflow.processing.bronze import BRONZE_SCHEMA
from tripflow.processing.silver import SILVER_SCHEMA, build_silver, run_silver
from tripflow.settings import Settings

D1, D2, D3 = dt.date(2016, 1, 1), dt.date(2016, 1, 2), dt.date(2016, 1, 3)
READ_MS = batchkit.at(dt.date(2016, 2, 1), 0)


def bronze_rows(items: list[tuple[int, int, bytes, dt.date | None]]) -> pa.Table:
    n = len(items)
    return pa.Table.from_arrays([
        pa.array(["t"] * n, pa.string()),
        pa.array([p for p, _, _, _ in items], pa.int32()),
        pa.array([o for _, o, _, _ in items], pa.int64()),
        pa.array([READ_MS] * n, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        pa.array([None] * n, pa.binary()),
        pa.array([v for _, _, v, _ in items], pa.binary()),
        pa.array([dt.datetime(2016, 2, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
        pa.array([d for _, _, _, d in items], pa.date32()),
    ], schema=BRONZE_SCHEMA)


def test_first_record_per_key_by_partition_then_offset_is_kept() -> None:
    click = batchkit.record(batchkit.at(D1, 10), "a" * 24, 7, title="x")
    other = batchkit.record(batchkit.at(D1, 11), "b" * 24, 8)
    built = build_silver(bronze_rows([
        (1, 5, click, D1), (0, 9, click, D1), (0, 3, other, D1), (1, 2, other, D1),
        (0, 4, b"not json", D1),
    ]))
    assert built.clicks.schema == SILVER_SCHEMA
    kept = sorted(zip(built.clicks.column("document_id").to_pylist(),
                      built.clicks.column("kafka_partition").to_pylist(),
                      built.clicks.column("kafka_offset").to_pylist(), strict=True))
    assert kept == [(7, 0, 9), (8, 0, 3)]
    assert (built.rows_in, built.duplicates, built.misplaced) == (5, 2, 0)
    bad = built.quarantine.to_pylist()
    assert [(r["topic"], r["partition"], r["offset"], r["reason"]) for r in bad] == [
        ("t", 0, 4, "not_json")]


def test_a_click_in_the_wrong_bronze_partition_is_counted_not_written() -> None:
    click = batchkit.record(batchkit.at(D2, 10), "a" * 24, 7)
    built = build_silver(bronze_rows([(0, 0, click, D1)]))
    assert built.clicks.num_rows == 0 and built.misplaced == 1


def silver_rows(settings: Settings) -> dict[dt.date, int]:
    table = lake.open_table(settings, lake.SILVER)
    if table is None:
        return {}
    dates = table.to_pyarrow_table(columns=["event_date"]).column("event_date")
    return {item["values"]: item["counts"] for item in pc.value_counts(dates).to_pylist()}


def quarantined(settings: Settings) -> list[tuple[int, int, str]]:
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        return conn.execute('select partition, "offset", reason from tripflow.quarantine '
                            'order by 1, 2, 3').fetchall()


def test_changed_rebuilds_only_the_dates_bronze_appended_to(settings: Settings) -> None:
    assert run_silver(settings).dates == []  # no bronze yet: nothing to do
    batchkit.write_bronze(settings, [batchkit.record(batchkit.at(D1, h), "a" * 24, h)
                                     for h in range(5)])
    first = run_silver(settings, changed=True)
    assert first.dates == [D1] and first.clicks == 5
    batchkit.write_bronze(settings, [batchkit.record(batchkit.at(D2, 1), "b" * 24, 1),
                                     batchkit.record(batchkit.at(D3, 1), "c" * 24, 1)])
    assert run_silver(settings).dates == [D2, D3]
    # A late click of D1 arrives: D1 (and only D1) is rebuilt, and holds it.
    batchkit.write_bronze(settings, [batchkit.record(batchkit.at(D1, 23), "late" * 6, 99)])
    late = run_silver(settings)
    assert late.dates == [D1]
    assert silver_rows(settings) == {D1: 6, D2: 1, D3: 1}
    assert run_silver(settings).dates == []
    # Deleting silver to rebuild it: --changed then means every date.
    shutil.rmtree(lake.table_uri(settings, lake.SILVER))
    assert run_silver(settings).dates == [D1, D2, D3]
    # Still so when a run of explicit dates comes first (it recreates the table, and such
    # a run never stores the mark): it rebuilds its date, --changed then all the others.
    shutil.rmtree(lake.table_uri(settings, lake.SILVER))
    assert run_silver(settings, [D2]).dates == [D2]
    assert silver_rows(settings) == {D2: 1}
    assert run_silver(settings).dates == [D1, D2, D3]
    assert silver_rows(settings) == {D1: 6, D2: 1, D3: 1}


def test_undated_rows_are_quarantined_once(settings: Settings) -> None:
    too_old = batchkit.record(batchkit.at(dt.date(1999, 1, 1), 1), "a" * 24, 1)
    future = batchkit.record(batchkit.at(dt.date(2099, 1, 1), 1), "a" * 24, 2)
    no_session = batchkit.record(batchkit.at(D1, 1), "", 3)  # dated: its date's run
    sent = batchkit.write_bronze(settings, [too_old, future, b"[1, 2]", no_session],
                                 partitions=1)
    first = run_silver(settings)
    assert (first.undated, first.quarantined, first.quarantined_new) == (3, 4, 4)
    assert quarantined(settings) == [(0, 0, "too_old"), (0, 1, "in_future"),
                                     (0, 2, "not_object"), (0, 3, "no_session")]
    # Undated rows are not read again; a rebuild of D1 finds its bad record again, but
    # the quarantine keeps one row per record.
    again = run_silver(settings, [D1])
    assert (again.undated, again.quarantined, again.quarantined_new) == (0, 1, 0)
    batchkit.write_bronze(settings, [b"null"], partitions=1)
    third = run_silver(settings)
    assert (third.undated, third.quarantined_new) == (1, 1)
    assert len(quarantined(settings)) == 5 and len(sent) == 4


def test_undated_rows_at_offsets_a_replaced_log_reuses_are_quarantined_too(
        settings: Settings) -> None:
    batchkit.write_bronze(settings, [b"[1]", b"[2]", b"[3]"], partitions=1)
    first = run_silver(settings)
    assert (first.undated, first.quarantined_new) == (3, 3)
    # the broker's log was replaced: its offsets start at 0 again, for other records
    batchkit.write_bronze(settings, [b"{}"], partitions=1, first_offsets=[0])
    again = run_silver(settings)
    assert (again.undated, again.quarantined_new) == (1, 1)
    assert quarantined(settings) == [(0, 0, "bad_date"), (0, 0, "not_object"),
                                     (0, 1, "not_object"), (0, 2, "not_object")]


def test_explicit_dates_are_a_pure_function_of_bronze(settings: Settings) -> None:
    lines = [batchkit.record(batchkit.at(D1, h % 24, h), f"s{h % 5:023d}", h % 7, title=str(h))
             for h in range(60)]
    batchkit.write_bronze(settings, lines + lines[:10], partitions=3)
    first = run_silver(settings, [D1, D2])
    assert (first.clicks, first.duplicates) == (60, 10)
    before = lake.open_table(settings, lake.SILVER).to_pyarrow_table().sort_by(
        [("dedup_key", "ascending")])
    second = run_silver(settings, [D1])
    after = lake.open_table(settings, lake.SILVER).to_pyarrow_table().sort_by(
        [("dedup_key", "ascending")])
    assert second.clicks == 60 and after.equals(before)
    assert silver_rows(settings) == {D1: 60}


def test_dates_and_changed_together_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="not both"):
        run_silver(settings, [D1], changed=True)


def test_groups_rebuilt_by_threads_equal_one_group(settings: Settings) -> None:
    """Six dates rebuilt as six groups by two threads (one predicate overwrite each) and
    as one group give the same silver rows and the same quarantine."""
    days = [D1 + dt.timedelta(days=i) for i in range(6)]
    lines = [batchkit.record(batchkit.at(day, h), f"s{h % 4:023d}", h % 5, title=f"{day}/{h}")
             for day in days for h in range(0, 24, 3)]
    bad = [b'{"SessionId": "x"}', b"not json"]
    batchkit.write_bronze(settings, lines + lines[::4] + bad, partitions=3)

    threaded = run_silver(settings, days, chunk_rows=1, threads=2)
    assert (threaded.commits, threaded.clicks, threaded.duplicates) == (6, 48, 12)
    # where the time went, summed over the six groups, in the summary and the run log
    assert list(threaded.timings) == ["undated", "read", "parse", "quarantine", "write"]
    with psycopg.connect(settings.pg_dsn) as conn:  # type: ignore[arg-type]
        detail = conn.execute("select detail from tripflow.run_log where step = 'silver' "
                              "order by run_id desc limit 1").fetchone()[0]
    assert detail.endswith(f"; timings {threaded.timings}")
    by_threads = lake.open_table(settings, lake.SILVER).to_pyarrow_table().sort_by(
        [("dedup_key", "ascending")])
    shutil.rmtree(lake.table_uri(settings, lake.SILVER))
    single = run_silver(settings, days, chunk_rows=10**6)
    assert (single.commits, single.clicks, single.duplicates) == (1, 48, 12)
    in_one = lake.open_table(settings, lake.SILVER).to_pyarrow_table().sort_by(
        [("dedup_key", "ascending")])
    assert by_threads.equals(in_one)
    assert silver_rows(settings) == {day: 8 for day in days}
    assert sorted(reason for _, _, reason in quarantined(settings)) == ["bad_date", "not_json"]
