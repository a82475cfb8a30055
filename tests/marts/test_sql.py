"""The mart SQL files, run by the DuckDB engine over silver rows, against values computed
independently (batchkit) and against hand-checked edge cases."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa

from tests.kits import batchkit
from tripflow.marts import engine
from tripflow.processing.silver import build_silver

DAY = dt.date(2016, 3, 1)
NEXT = DAY + dt.timedelta(days=1)


def rows(table: pa.Table, columns: str) -> set[tuple]:
    names = [c.strip() for c in columns.split(",")]
    return set(zip(*(table.column(n).to_pylist() for n in names), strict=True))


def run(lines: list[bytes], articles: pa.Table | None = None
        ) -> tuple[dict[str, pa.Table], batchkit.Truth]:
    bronze, sent = batchkit.bronze_table(lines, partitions=3)
    silver = build_silver(bronze).clicks.select(engine.SILVER_COLUMNS)
    queries = [*engine.mart_names(), engine.RECONCILE_QUERY]
    return engine.DuckDBEngine().run(engine.relations(silver, articles), queries), \
        batchkit.truth(sent)


def edge_data() -> list[bytes]:
    # Background clicks on DAY, plus the edge cases of batchkit.edge_lines on DAY/NEXT.
    background = [batchkit.record(batchkit.at(DAY, (i * 7) % 24, i % 60, i % 50, i),
                                  f"bg{i % 13:022d}", 5000 + i % 17, title=f"T{i % 4}",
                                  areas=",Oncology,surgery" if i % 3 else "")
                  for i in range(120)]
    return background + batchkit.edge_lines(DAY)


def test_every_mart_equals_the_independent_computation() -> None:
    results, truth = run(edge_data())
    want = batchkit.expected_marts(truth.clicks)
    for mart in engine.mart_names():
        assert rows(results[mart], batchkit.MART_COLUMNS[mart]) == want[mart], mart
    assert rows(results[engine.RECONCILE_QUERY], batchkit.MART_COLUMNS["traffic_minute"]) == \
        want["traffic_minute"]


def test_hand_checked_edge_cases() -> None:
    results, _ = run(batchkit.edge_lines(DAY))
    daily = {r["event_date"]: r for r in results["mart_daily_traffic"].to_pylist()}
    assert daily[NEXT]["peak_hour"] == 5  # 3 clicks at 05h and 3 at 09h: earliest wins
    sessions = {(r["session_id"], r["event_date"]): r
                for r in results["mart_session_analysis"].to_pylist()}
    night = "midnight0000000000000000"
    assert sessions[(night, DAY)]["click_count"] == 2
    assert sessions[(night, DAY)]["session_duration_sec"] == 29  # 29.749 s, rounded down
    assert sessions[(night, NEXT)]["click_count"] == 1
    assert sessions[(night, NEXT)]["session_duration_sec"] == 0
    areas = {(r["event_date"], r["clinical_area"]): r["search_count"]
             for r in results["mart_clinical_areas"].to_pylist()}
    # ",Oncology,oncology, Surgery ,,obgyn,OB-Gyn,tropical_medicine": each area once per
    # click; the unknown name is kept title-cased as an area of the mart (spec).
    assert areas[(DAY, "Oncology")] == 1 and areas[(DAY, "OB-Gyn")] == 1
    assert areas[(DAY, "Surgery")] == 1 and areas[(DAY, "Neurology")] == 1
    assert areas[(NEXT, "Oncology")] == 1
    assert areas[(DAY, "Tropical Medicine")] == 1
    assert [area for _, area in areas if "Tropical" in area] == ["Tropical Medicine"]
    titles = {r["document_id"]: r["title"] for r in results["mart_popular_documents"].to_pylist()
              if r["event_date"] == DAY}
    assert titles[batchkit.UNKNOWN_DOC] == "Second title"  # the latest non-blank one
    assert titles[batchkit.UNKNOWN_DOC + 1] is None  # only a blank title
    # Same millisecond: the later Kafka position wins (partition, then offset).
    same = [(c.partition, c.offset, c.title) for c in batchkit.truth(
        batchkit.bronze_table(batchkit.edge_lines(DAY), partitions=3)[1]).clicks
        if c.document_id == batchkit.UNKNOWN_DOC + 2]
    assert titles[batchkit.UNKNOWN_DOC + 2] == max(same)[2]


def test_catalogue_titles_win_when_loaded() -> None:
    catalogue = pa.table({"document_id": pa.array([batchkit.UNKNOWN_DOC, 830], pa.int64()),
                          "title": ["From the catalogue", "  "]})
    results, truth = run(batchkit.edge_lines(DAY), catalogue)
    titles = {r["document_id"]: r["title"] for r in results["mart_popular_documents"].to_pylist()
              if r["event_date"] == DAY}
    assert titles[batchkit.UNKNOWN_DOC] == "From the catalogue"
    assert titles[830] == "t"  # a blank catalogue title falls back to the clicks' rule
    want = batchkit.expected_marts(truth.clicks, {batchkit.UNKNOWN_DOC: "From the catalogue",
                                                  830: "  "})
    assert rows(results["mart_popular_documents"],
                batchkit.MART_COLUMNS["mart_popular_documents"]) == want["mart_popular_documents"]


def test_no_rows_in_no_rows_out() -> None:
    results, _ = run([])
    assert all(table.num_rows == 0 for table in results.values())


# Constructs one engine accepts and another does not: the files must not use them.
NOT_PORTABLE = [r"::", r"//", r"\bunnest\b", r"\bexplode\b", r"\bqualify\b", r"\bepoch_ms\b",
                r"\bunix_millis\b", r"\barg_max\b", r"\bmax_by\b", r"\blist_", r"\bstrftime\b",
                r"\bilike\b", r"\$\d", r"\?"]


def test_sql_files_stay_portable() -> None:
    for name in [*engine.mart_names(), engine.RECONCILE_QUERY]:
        code = "\n".join(line.split("--")[0] for line in engine.sql_text(name).splitlines())
        for pattern in NOT_PORTABLE:
            assert not re.search(pattern, code, re.IGNORECASE), f"{name}: {pattern}"
