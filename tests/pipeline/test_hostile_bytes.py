"""U+0000 and unknown clinical areas through every step (spec "Hostile bytes", "Clinical
areas"): on main, one NUL in DateCreated crashed the stream worker and silver on every
run (the quarantine's detail is text) and one in a Title made marts fail for its date;
unknown areas were left out of the area marts."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tripflow.settings import Settings

DAY_MS = 1_456_790_400_000  # 2016-03-01


def line(n: int, **fields: object) -> bytes:
    record = {"DateCreated": f"/Date({DAY_MS + n * 1000})/", "SessionId": f"s{n:023d}",
              "DocumentId": 100 + n, **fields}
    return json.dumps(record).encode()


def test_nul_bytes_and_unknown_areas_leave_every_step_running(
        tmp_path: Path, settings: Settings, tripflow_env: dict[str, str], tripflow_cli) -> None:
    escaped_date = line(1).replace(b'"/Date(1', b'"/Date(1\\u0000', 1)
    raw_date = line(2).replace(b'"/Date(1', b'"/Date(1\x00', 1)
    lines = [
        escaped_date,  # bad_date, its detail shows the escape as text
        raw_date,  # not_json: a raw control byte
        line(3, Title="Tis\x00sue", ClinicalAreas=",Space Medicine,Oncology"),  # escaped
        line(4, ClinicalAreas="space_medicine"),
        line(5, Keywords="asthma\x00"),
    ]
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "2016-03-01.json").write_bytes(b"\n".join(lines) + b"\n")
    for step in (["produce", str(folder)], ["stream", "--until-idle", "3"],
                 ["bronze", "--until-idle", "3"], ["silver"], ["marts", "--changed"],
                 ["stream", "--until-idle", "1"], ["silver", "--dates", "2016-03-01"]):
        tripflow_cli(*step, env=tripflow_env)  # each must exit 0, the reruns too
    with psycopg.connect(settings.pg_dsn) as conn:
        quarantined = conn.execute("select reason, raw, detail from tripflow.quarantine "
                                   "order by reason").fetchall()
        titles = dict(conn.execute("select document_id, title from mart_popular_documents"))
        cold = dict(conn.execute("select clinical_area, search_count from mart_clinical_areas"))
        hot = dict(conn.execute("select clinical_area, click_count "
                                "from mart_realtime_clinical_trend_24h"))
        nul_removed, clicks = conn.execute(
            "select nul_removed, clicks_new from tripflow.hot_state").fetchone()
    assert [(reason, raw) for reason, raw, _detail in quarantined] == [
        ("bad_date", escaped_date), ("not_json", raw_date)]
    assert all("\x00" not in detail for _reason, _raw, detail in quarantined)
    assert "\\u0000" in quarantined[0][2]
    assert titles == {103: "Tissue", 104: None, 105: None}
    assert cold == hot == {"Space Medicine": 2, "Oncology": 1}
    assert (nul_removed, clicks) == (2, 3)
