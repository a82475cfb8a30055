"""Lines the producer must not choke on (spec "Hostile bytes"): a line over the topic's
message limit is quarantined as `too_large` with its file and line and the run goes on;
lines of only array punctuation are skipped and counted; resending a file does not double
the quarantine. On the real broker and database, through the real `tripflow produce`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from tests.ingestion.test_produce import consume_all
from tripflow.settings import Settings

DAY_MS = 1_451_606_400_000  # 2016-01-01


def click(n: int, **fields: object) -> bytes:
    record = {"DateCreated": f"/Date({DAY_MS + n})/", "SessionId": f"session{n:017d}",
              "DocumentId": n, **fields}
    return json.dumps(record).encode()


@pytest.fixture
def day_file(tmp_path: Path) -> tuple[Path, bytes]:
    huge = click(2, Title="z" * 1_200_000)  # over the default 1,000,000-byte limit
    path = tmp_path / "logs" / "2016-01-01.json"
    path.parent.mkdir()
    path.write_bytes(b"\n".join([b"[", click(1), huge, b"", click(3) + b",", b"[]", b",",
                                 b"not json", b"]"]) + b"\n")
    return path, huge


@pytest.mark.parametrize("mode", ["bulk", "replay"])
def test_a_line_over_the_message_limit_is_quarantined_and_the_run_goes_on(
        mode: str, day_file: tuple[Path, bytes], settings: Settings,
        tripflow_env: dict[str, str], tripflow_cli) -> None:
    path, huge = day_file
    args = ["--mode", mode, "--speed", "1000000"] if mode == "replay" else []
    result = tripflow_cli("produce", str(path.parent), *args, env=tripflow_env)
    summary = next(line for line in result.stdout.splitlines()
                   if line.startswith("produced to"))
    assert "delivered 3," in summary and "failed 0," in summary
    assert "1 too large (quarantined)" in summary
    assert "5 lines without a record skipped" in summary  # [, blank, [], ",", ]
    received = consume_all(settings, expected=3)
    assert sorted(r.value for r in received) == sorted(
        [click(1), click(3) + b",", b"not json"])
    with psycopg.connect(settings.pg_dsn) as conn:
        rows = conn.execute(
            "select reason, source_file, source_line, raw_length, raw, raw_sha256, seen_count, "
            "topic, detail from tripflow.quarantine").fetchall()
    assert rows == [("too_large", "2016-01-01.json", 3, len(huge), huge[:64 * 1024],
                     hashlib.sha256(huge).digest(), 1, None,
                     f"{len(huge):,} bytes: over the topic's message limit of 1,000,000 bytes")]


def test_resending_a_file_counts_its_bad_lines_once_each_seen_twice(
        day_file: tuple[Path, bytes], settings: Settings, tripflow_env: dict[str, str],
        tripflow_cli) -> None:
    path, huge = day_file
    for _ in range(2):
        tripflow_cli("produce", str(path.parent), env=tripflow_env)
    tripflow_cli("stream", "--until-idle", "3", env=tripflow_env)
    tripflow_cli("bronze", "--until-idle", "3", env=tripflow_env)
    tripflow_cli("silver", env=tripflow_env)
    with psycopg.connect(settings.pg_dsn) as conn:
        rows = conn.execute("select reason, raw_length, seen_count from tripflow.quarantine "
                            "order by reason").fetchall()
    # On main: 2 rows for "not json" (one per offset) and the producer crashed on `huge`.
    assert rows == [("not_json", len(b"not json"), 2), ("too_large", len(huge), 2)]
    status = tripflow_cli("status", env=tripflow_env).stdout
    assert "quarantine: not_json 1 (seen 2 times), too_large 1 (seen 2 times)" in status
