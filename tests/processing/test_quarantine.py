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
