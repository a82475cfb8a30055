"""The record's rules, stated once in tripflow.records: the three forms of the dedup key
agree, and the time rules say what the parser does."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa

from tripflow.records import rules
from tripflow.records.dedup import dedup_key, dedup_key_bytes, dedup_keys
from tripflow.records.parser import parse_batch

CASES = [("abc123", 17, 1_451_606_400_000), ("x", 9_223_372_036_854_775_807, 946_684_800_000),
         ("ünï", -5, 1)]


def test_the_dedup_key_forms_agree() -> None:
    per_row = [dedup_key(*case) for case in CASES]
    assert per_row[0] == f"{int(per_row[0], 16):016x}" and len(per_row[0]) == 16
    assert [dedup_key_bytes(s.encode(), str(d).encode(), str(ms).encode()).decode()
            for s, d, ms in CASES] == per_row
    sessions, documents, times = zip(*CASES, strict=True)
    assert dedup_keys(pa.array(sessions), pa.array(documents, pa.int64()),
                      pa.array(times, pa.int64())).to_pylist() == per_row


def test_the_parser_keys_and_dates_by_the_rules() -> None:
    ms = 1_451_692_799_999  # 2016-01-01T23:59:59.999Z
    line = f'{{"DateCreated": "/Date({ms})/", "SessionId": "s1", "DocumentId": 42}}'.encode()
    clicks = parse_batch([line], read_ms=ms).clicks
    assert clicks.column("dedup_key").to_pylist() == [dedup_key("s1", 42, ms)]
    assert clicks.column("event_date").to_pylist() == [rules.event_date(ms)]
    assert rules.event_date(ms) == dt.date(2016, 1, 1)
    assert rules.event_date(-1) == dt.date(1969, 12, 31)


def test_plausible_event_times() -> None:
    read = rules.EARLIEST_EVENT_MS + 10
    assert rules.plausible(rules.EARLIEST_EVENT_MS, read)
    assert not rules.plausible(rules.EARLIEST_EVENT_MS - 1, read)
    assert rules.plausible(read + rules.ONE_DAY_MS, read)
    assert not rules.plausible(read + rules.ONE_DAY_MS + 1, read)
    assert rules.ONE_DAY_MS == 86_400_000


def test_date_created_patterns() -> None:
    assert re.match(rules.DATE_CREATED_VALUE, "/Date(1451606400000)/")
    assert not re.match(rules.DATE_CREATED_VALUE, "/Date(1451606400000+0000)/")
    raw = re.compile(rules.DATE_CREATED_KEY + rules.DATE_CREATED_RAW)
    match = raw.search(r'{"DateCreated" : "\/Date(1451606400000)\/", "SessionId": "s"}')
    assert match and match.group("ms") == "1451606400000"
