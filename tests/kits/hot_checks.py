"""Compare the real-time marts in PostgreSQL with the plain-Python reference."""

from __future__ import annotations

import psycopg

from tests.kits import hot_reference as ref


def read_marts(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn, options="-c timezone=UTC") as conn:
        clock = conn.execute("select clock from tripflow.hot_state").fetchone()[0]
        minutes = {row[0]: tuple(row[1:]) for row in conn.execute(
            "select event_minute, total_clicks, unique_sessions, unique_docs "
            "from mart_realtime_traffic_minute")}
        snapshot = clock.replace(second=0, microsecond=0) if clock else None
        top = [tuple(row) for row in conn.execute(
            "select rank, document_id, title, click_count, unique_sessions "
            "from mart_realtime_top_docs_1h where snapshot_ts = %s order by rank", (snapshot,))]
        trend = {row[0]: (row[1], row[2], row[3]) for row in conn.execute(
            "select clinical_area, click_count, unique_sessions, trend_pct "
            "from mart_realtime_clinical_trend_24h where snapshot_ts = %s", (snapshot,))}
        anomalies = {(row[0], row[1]): tuple(row[2:]) for row in conn.execute(
            "select detected_ts, session_id, window_start, window_end, click_count, severity "
            "from mart_realtime_anomaly_sessions")}
        state = conn.execute(
            "select records, clicks_new, duplicates, late_for_hot, quarantined "
            "from tripflow.hot_state").fetchone()
        stored = conn.execute("select count(*) from tripflow.hot_clicks").fetchone()[0]
        quarantined = conn.execute("select count(*) from tripflow.quarantine").fetchone()[0]
    return {"clock": clock, "minutes": minutes, "top": top, "trend": trend,
            "anomalies": anomalies, "state": state, "stored": stored,
            "quarantine_rows": quarantined}


def expected_marts(clicks: list[ref.Click]) -> dict[str, object]:
    clock_ms = max(c.ms for c in clicks)
    return {"clock": ref.ts(clock_ms), "minutes": ref.traffic_minutes(clicks),
            "top": ref.top_docs(clicks, clock_ms), "trend": ref.clinical_trend(clicks, clock_ms),
            "anomalies": ref.episodes(clicks)}


def assert_marts_equal(dsn: str, clicks: list[ref.Click], *, records: int | None = None,
                       bad: int | None = None) -> dict[str, object]:
    """Every hot mart equals the reference (and the totals are exactly once)."""
    got = read_marts(dsn)
    want = expected_marts(clicks)
    assert got["clock"] == want["clock"]
    assert got["minutes"] == want["minutes"], _diff(got["minutes"], want["minutes"])
    assert got["top"] == want["top"]
    assert got["trend"] == want["trend"]
    assert got["anomalies"] == want["anomalies"], _diff(got["anomalies"], want["anomalies"])
    assert got["stored"] == len(clicks)
    records_seen, new, duplicates, late, quarantined = got["state"]
    assert new == len(clicks) and late == 0
    if records is not None:
        assert records_seen == records  # every Kafka record counted exactly once
        assert duplicates == records - len(clicks) - (bad or 0)
    if bad is not None:
        assert quarantined == bad
        assert got["quarantine_rows"] == bad
    return got


def _diff(got: dict, want: dict) -> str:
    keys = sorted(set(got) | set(want), key=str)
    lines = [f"{k}: got {got.get(k)} want {want.get(k)}" for k in keys if got.get(k) != want.get(k)]
    return f"{len(lines)} differences:\n" + "\n".join(lines[:20])


