"""The quarantine table (tripflow.processing.quarantine) on the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pyarrow as pa

from tripflow.processing import quarantine
from tripflow.records.parser import parse_batch


def bad_records(values: list[bytes], offsets: list[int]) -> pa.Table:
    context = pa.table({"topic": ["t"] * len(values), "partition": pa.array([0] * len(values),
                        pa.int32()), "offset": pa.array(offsets, pa.int64())})
    parsed = parse_batch(values, context=context, read_ms=1_500_000_000_000)
    assert parsed.clicks.num_rows == 0
    return parsed.quarantine


def test_a_record_seen_again_is_one_row_and_a_new_record_at_a_reused_offset_another(
        pg_dsn: str) -> None:
    first = bad_records([b"not json", b'{"DateCreated": "yesterday"}'], [7, 8])
    # the embedded broker restarted: its new log hands out offset 7 again, to another record
    after_reset = bad_records([b"[1, 2]"], [7])
    with psycopg.connect(pg_dsn) as conn:
        assert quarantine.store(conn, first) == 2
        assert quarantine.store(conn, first) == 0  # a retry, or silver after the hot path
        assert quarantine.store(conn, after_reset) == 1
        rows = conn.execute('select "offset", reason, raw from tripflow.quarantine '
                            'order by "offset", reason').fetchall()
    assert rows == [(7, "not_json", b"not json"), (7, "not_object", b"[1, 2]"),
                    (8, "bad_date", b'{"DateCreated": "yesterday"}')]


def quarantine_rows(pg_dsn: str) -> list[tuple]:
    with psycopg.connect(pg_dsn) as conn:
        return conn.execute('select raw, reason, "offset", seen_count, raw_length '
                            'from tripflow.quarantine order by "offset" nulls last').fetchall()


def test_the_same_bad_bytes_resent_are_one_record_seen_again(pg_dsn: str) -> None:
    # Spec "Bad input": a resend (the same file produced twice) puts the same bad bytes at
    # new offsets; they are one quarantined record, seen twice — on main they were two rows.
    first = bad_records([b"not json", b"null"], [0, 1])
    resend = bad_records([b"not json", b"null", b"null"], [5, 6, 7])
    with psycopg.connect(pg_dsn) as conn:
        assert quarantine.store(conn, first) == 2
        assert quarantine.store(conn, resend) == 0
        assert quarantine.store(conn, resend) == 0  # silver after the hot path: no change
    assert quarantine_rows(pg_dsn) == [(b"not json", "not_json", 0, 2, 8),
                                       (b"null", "not_object", 1, 3, 4)]


def test_lines_the_producer_could_not_send_are_kept_by_file_and_line(pg_dsn: str) -> None:
    big = b'{"Title": "' + b"x" * (100 * 1024) + b'"}'
    line = quarantine.UnsentLine.of("2016-01-01.json", 3, big, "too_large", "1 MB limit")
    with psycopg.connect(pg_dsn) as conn:
        assert quarantine.store_unsent(conn, [line], run_id="run-1") == 1
        assert quarantine.store_unsent(conn, [line], run_id="run-1") == 0  # a retry
        assert quarantine.store_unsent(conn, [line], run_id="run-2") == 0  # a resend
        row = conn.execute(
            "select reason, source_file, source_line, raw_length, length(raw), seen_count, "
            "raw_sha256 = sha256(%s), topic from tripflow.quarantine", (big,)).fetchone()
    assert row == ("too_large", "2016-01-01.json", 3, len(big), 64 * 1024, 2, True, None)
