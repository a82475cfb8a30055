"""run_marts against PostgreSQL and the lake: per-date replace, gold, --changed, the
catalogue, and the reconciliation of the hot traffic-minute mart."""

from __future__ import annotations

import datetime as dt
import importlib
import shutil
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable

from tests.kits import batchkit
from tripflow import lake
from tripflow.marts import articles as articles_module
from tripflow.marts import backfill, mart_row_counts, run_marts
from tripflow.marts.articles import load_articles
from tripflow.processing.silver import run_silver
from tripflow.records.articles import write_articles
from tripflow.settings import Settings

D1, D2, D3 = dt.date(2016, 3, 1), dt.date(2016, 3, 2), dt.date(2016, 3, 3)
MARTS = ["mart_session_analysis", "mart_daily_traffic", "mart_clinical_areas",
         "mart_popular_documents", "mart_hourly_traffic"]


def day_lines(day: dt.date, n: int = 40) -> list[bytes]:
    return [batchkit.record(batchkit.at(day, i % 24, i), f"s{day.day}{i % 9:022d}", 100 + i % 11,
                            title=f"title {i % 3}", areas=",Cardiology" if i % 2 else "neurology")
            for i in range(n)]


@pytest.fixture
def built(settings: Settings) -> list[batchkit.Sent]:
    sent = batchkit.write_bronze(settings, day_lines(D1) + day_lines(D2) + day_lines(D3)
                                 + batchkit.edge_lines(D2), partitions=3)
    run_silver(settings)
    return sent


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.pg_dsn, autocommit=True)  # type: ignore[arg-type]


def test_marts_equal_the_independent_computation_in_postgres_and_gold(
        settings: Settings, built: list[batchkit.Sent]) -> None:
    summary = run_marts(settings)
    want = batchkit.expected_marts(batchkit.truth(built).clicks)
    assert summary.dates == [D1, D2, D3]
    with connect(settings) as conn:
        for mart in MARTS:
            assert batchkit.pg_mart_rows(conn, mart) == want[mart], mart
            gold = DeltaTable(lake.table_uri(settings, lake.gold(mart))).to_pyarrow_table()
            columns = [c.strip() for c in batchkit.MART_COLUMNS[mart].split(",")]
            gold_rows = set(zip(*(gold.column(c).to_pylist() for c in columns), strict=True))
            assert gold_rows == want[mart], mart
        assert batchkit.pg_mart_rows(conn, "traffic_minute") == want["traffic_minute"]
    assert summary.rows_out["mart_daily_traffic"] == 3
    for table in [lake.SILVER, *(lake.gold(mart) for mart in MARTS)]:  # checkpoint every 10
        configuration = DeltaTable(lake.table_uri(settings, table)).metadata().configuration
        assert configuration == {"delta.checkpointInterval": "10"}, table
    assert run_marts(settings).dates == []  # --changed: nothing changed since
    # A gold table deleted to rebuild it: --changed then means every date, even after a
    # run of explicit dates recreated it (such a run never stores the mark).
    shutil.rmtree(lake.table_uri(settings, lake.gold("mart_daily_traffic")))
    assert run_marts(settings, [D3]).dates == [D3]
    assert run_marts(settings).dates == [D1, D2, D3]


def test_a_run_replaces_exactly_its_dates(settings: Settings, built: list[batchkit.Sent]) -> None:
    run_marts(settings)
    with connect(settings) as conn:
        conn.execute("update mart_daily_traffic set total_events = -1 where event_date <> %s",
                     (D2,))
        conn.execute("delete from mart_session_analysis where event_date = %s", (D2,))
    # A late click of D2: silver --changed rebuilds D2, marts --changed follows it.
    late = batchkit.record(batchkit.at(D2, 20), "late" * 6, 4242)
    built += batchkit.write_bronze(settings, [late], partitions=3)
    assert run_silver(settings).dates == [D2]
    assert run_marts(settings).dates == [D2]
    want = batchkit.expected_marts(batchkit.truth(built).clicks)
    with connect(settings) as conn:
        daily = dict(conn.execute(
            "select event_date, total_events from mart_daily_traffic").fetchall())
        assert daily[D1] == daily[D3] == -1  # untouched
        assert daily[D2] == next(r[1] for r in want["mart_daily_traffic"] if r[0] == D2)
        sessions = {r for r in batchkit.pg_mart_rows(conn, "mart_session_analysis")
                    if r[1] == D2}
        assert sessions == {r for r in want["mart_session_analysis"] if r[1] == D2}


def test_reconciliation_counts_and_only_touches_changed_minutes(
        settings: Settings, built: list[batchkit.Sent]) -> None:
    want = batchkit.expected_marts(batchkit.truth(built).clicks)["traffic_minute"]
    minutes = sorted(want)
    same, wrong = minutes[0], minutes[1]
    old = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    stale = dt.datetime.combine(D1, dt.time(23, 59), dt.UTC)
    assert stale not in {m[0] for m in want}
    other_day = dt.datetime.combine(D3 + dt.timedelta(days=1), dt.time(1), dt.UTC)
    with connect(settings) as conn:
        rows = [(*same, old), (wrong[0], wrong[1] + 5, wrong[2], wrong[3], old),
                (stale, 1, 1, 1, old), (other_day, 7, 7, 7, old)]
        with conn.cursor() as cur:
            cur.executemany("insert into mart_realtime_traffic_minute values (%s,%s,%s,%s,%s)",
                            rows)
    summary = run_marts(settings, [D1, D2, D3])
    rec = summary.reconciliation
    assert rec is not None and rec.dates == [D1, D2, D3]
    # every silver minute but `same` is inserted or updated; `stale` is deleted
    assert (rec.minutes_in_silver, rec.minutes_changed, rec.minutes_deleted) == (
        len(want), len(want) - 1, 1)
    with connect(settings) as conn:
        found = conn.execute("select event_minute, total_clicks, unique_sessions, unique_docs, "
                             "updated_at from mart_realtime_traffic_minute").fetchall()
        by_minute = {r[0]: r for r in found}
        assert {r[:4] for r in found} == want | {(other_day, 7, 7, 7)}
        assert by_minute[same[0]][4] == old  # unchanged values keep their updated_at
        assert by_minute[wrong[0]][4] > old
        figures = conn.execute("select event_date, minutes_changed, minutes_deleted from "
                               "tripflow.reconciliation order by 1").fetchall()
        assert sum(f[1] + f[2] for f in figures) == rec.drift and len(figures) == 3
    again = run_marts(settings, [D1, D2, D3]).reconciliation
    assert again is not None and again.drift == 0


def test_reconciliation_skips_dates_the_hot_marts_no_longer_keep(
        settings: Settings, built: list[batchkit.Sent]) -> None:
    clock = dt.datetime.combine(D3 + dt.timedelta(days=8), dt.time(12), dt.UTC)
    with connect(settings) as conn:
        conn.execute("insert into mart_realtime_traffic_minute values (%s, 1, 1, 1, now())",
                     (clock,))
    summary = run_marts(settings, [D1, D2, D3])
    assert summary.reconciliation is None  # all three dates are > 7 days before the clock
    everything = run_marts(settings, [D1, D2, D3], reconcile_days=None).reconciliation
    assert everything is not None and everything.dates == [D1, D2, D3]


@pytest.mark.parametrize("lookup_limit", [50_000, 0], ids=["from-postgres", "from-lake"])
def test_catalogue_titles_and_its_load(settings: Settings, built: list[batchkit.Sent],
                                       tmp_path: Path, lookup_limit: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Small runs take titles from PostgreSQL by key, large ones from the lake: same titles.
    monkeypatch.setattr(articles_module, "_LOOKUP_DOCUMENTS", lookup_limit)
    path = tmp_path / "allarticles.txt"
    write_articles([(100, "Catalogue title\nwith a second line", "_http://odd"),
                    (101, "", None), (100, "Second record of 100", "x")], path)
    loaded = load_articles(settings, path)
    assert (loaded.records, loaded.articles) == (3, 2)
    with connect(settings) as conn:
        assert conn.execute("select document_id, title, url from tripflow.articles "
                            "order by 1").fetchall() == [
            (100, "Catalogue title\nwith a second line", "_http://odd"), (101, "", None)]
    run_marts(settings, [D1])
    with connect(settings) as conn:
        found = dict(conn.execute("select document_id, title from mart_popular_documents "
                                  "where event_date = %s", (D1,)).fetchall())
    assert found[100] == "Catalogue title\nwith a second line"
    # An empty catalogue title falls back to the clicks' rule, as for unlisted documents.
    want = batchkit.expected_marts(batchkit.truth(built).clicks,
                                   {100: "Catalogue title\nwith a second line", 101: ""})
    assert found == {r[1]: r[2] for r in want["mart_popular_documents"] if r[0] == D1}


@pytest.mark.parametrize("how", ["from-postgres", "from-lake", "read-all"])
def test_catalogue_titles_follow_the_current_dimension_however_they_are_read(
        settings: Settings, built: list[batchkit.Sent], tmp_path: Path, how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # dim_documents' current title wins when not blank, also for a document the catalogue
    # does not list; a blank, closed or deleted version leaves the catalogue's title.
    if how == "from-lake":
        monkeypatch.setattr(articles_module, "_LOOKUP_DOCUMENTS", 0)
    if how == "read-all":  # a backfill: the whole catalogue read once, sorted by id
        monkeypatch.setattr(importlib.import_module("tripflow.marts.run"),
                            "_READ_ALL_ARTICLES_ROWS", 0)
    path = tmp_path / "allarticles.txt"
    write_articles([(100, "Catalogue 100", None), (101, "Catalogue 101", None),
                    (102, "Catalogue 102", None), (900, "Never clicked", None)], path)
    load_articles(settings, path)
    versions = [(100, 1, "Old 100", False, False), (100, 2, "Edited 100,\n\"quoted\"", True, False),
                (101, 1, "  ", True, False), (102, 1, "Deleted 102", False, True),
                (105, 1, "Only in the dimension", True, False), (106, 1, None, True, False)]
    with connect(settings) as conn:
        for doc, version, title, current, deleted in versions:
            conn.execute("insert into dim_documents (document_id, version, title, valid_from, "
                         "is_current, is_deleted, source_lsn) values (%s, %s, %s, now(), %s, "
                         "%s, 1)", (doc, version, title, current, deleted))
    run_marts(settings, [D1])
    with connect(settings) as conn:
        found = dict(conn.execute("select document_id, title from mart_popular_documents "
                                  "where event_date = %s", (D1,)).fetchall())
    titles = {100: "Edited 100,\n\"quoted\"", 101: "Catalogue 101", 102: "Catalogue 102",
              105: "Only in the dimension", 900: "Never clicked"}
    want = batchkit.expected_marts(batchkit.truth(built).clicks, titles)
    assert found == {r[1]: r[2] for r in want["mart_popular_documents"] if r[0] == D1}
    assert (found[100], found[101], found[102], found[105]) == (
        "Edited 100,\n\"quoted\"", "Catalogue 101", "Catalogue 102", "Only in the dimension")


def test_backfill_runs_silver_then_marts(settings: Settings) -> None:
    batchkit.write_bronze(settings, day_lines(D1) + day_lines(D2))
    summary = backfill(settings, D1, D3)
    assert summary.silver.dates == [D1, D2, D3] and summary.silver.clicks == 80
    assert summary.marts.dates == [D1, D2, D3]
    assert summary.marts.rows_out["mart_daily_traffic"] == 2
    counts = mart_row_counts(settings)
    assert counts["mart_daily_traffic"] == 2 and counts["mart_session_analysis"] > 0


def test_unknown_engine_and_bad_arguments(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown engine 'flink': choose one of duckdb, spark"):
        run_marts(settings, [D1], engine="flink")
    with pytest.raises(ValueError, match="not both"):
        run_marts(settings, [D1], changed=True)
    with pytest.raises(ValueError, match="before it starts"):
        backfill(settings, D3, D1)
