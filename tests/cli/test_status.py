"""`tripflow status` shows the dates whose reconciliation is pending, with why, and the
clinical-area names of the area marts that are not canonical (unmapped), from PostgreSQL."""

from __future__ import annotations

import datetime as dt

import psycopg

from tests.spec_areas import CANONICAL_AREAS as CANONICAL
from tripflow.settings import Settings

D1, D2 = dt.date(2016, 3, 1), dt.date(2016, 3, 2)


def test_status_shows_pending_reconciliation_and_unmapped_areas(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli) -> None:
    out = tripflow_cli("status", env=tripflow_env, timeout=120).stdout
    assert "reconciliation pending" not in out
    assert ("unmapped areas (not among the 32 canonical names): mart_clinical_areas none; "
            "hot trend's latest snapshot none") in out

    assert "Space Medicine" not in CANONICAL and "Cardiology" in CANONICAL
    old = dt.datetime(2016, 3, 2, 10, 0, tzinfo=dt.UTC)
    latest = old + dt.timedelta(minutes=5)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(
            "insert into tripflow.reconciliation_pending (event_date, reason) values "
            "(%s, %s), (%s, %s)",
            (D1, "bronze behind the hot path in partition 1; partition 1: bronze has none",
             D2, "bronze behind the hot path in partition 1; partition 1: bronze has none"))
        conn.execute(
            "insert into mart_clinical_areas values (%s, 'Cardiology', 10, 5), "
            "(%s, 'Space Medicine', 7, 3), (%s, 'Space Medicine', 5, 2), "
            "(%s, 'Tropical Medicine', 4, 4)", (D1, D1, D2, D2))
        conn.execute(
            "insert into mart_realtime_clinical_trend_24h values "
            "(%(old)s, 'Space Medicine', 100, 1, null), (%(old)s, 'Zoology', 50, 1, null), "
            "(%(latest)s, 'Cardiology', 9, 9, null), (%(latest)s, 'Space Medicine', 3, 2, 50)",
            {"old": old, "latest": latest})

    out = tripflow_cli("status", env=tripflow_env, timeout=120).stdout
    assert ("reconciliation pending for 2 dates (2016-03-01..2016-03-02): bronze behind the hot "
            "path in partition 1; partition 1: bronze has none") in out, out
    assert ("unmapped areas (not among the 32 canonical names): mart_clinical_areas 2 names, "
            "16 clicks (Space Medicine, Tropical Medicine); hot trend's latest snapshot "
            "1 name, 3 clicks (Space Medicine)") in out, out
