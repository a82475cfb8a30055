"""What the producer reads from a line: key, dedup key, event time (no broker needed).

The producer re-states a few of the parser's rules for speed; these tests hold it to the
parser (`tripflow.records.parser.parse_batch`), the single definition of validity.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
import xxhash

from tripflow.ingestion.lines import (
    identify,
    identify_all,
    inspect_line,
    is_click,
    rebased_line,
    server_of,
)
from tripflow.records.dedup import dedup_key
from tripflow.records.generate import generate
from tripflow.records.parser import parse_batch
from tripflow.records.readers import iter_day_files

SAMPLE_FILE = Path(__file__).resolve().parents[3] / "shared/data/tripclick_sample_2016-01-01.jsonl"
SPEC_RECORD = (
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "udcqii55du4gju45bno3d155", '
    b'"DocumentId": 5666868, '
    b'"Url": "http://sogc.org/wp-content/uploads/2014/12/gui317TU1501E1.pdf", '
    b'"Title": "Technical Update on Tissue Morcellation During Gynaecologic Surgery: Its Uses, '
    b'Complications and Risks of Unsuspected Malignancy", "DOI": "", "ClinicalAreas": '
    b'",Oncology,Surgery", "Keywords": "Laparoscopic gynecology", "Documents": []}'
)

# Lines outside the usual shape, each exercising one rule the parser also has.
ODD_LINES = [
    b"[" + SPEC_RECORD + b",",  # array-style file: first line
    b"  " + SPEC_RECORD + b"]  ",  # array-style file: last line, with spaces
    b'{"SessionId": "s1", "DocumentId": 7, "DateCreated": "/Date(1451606501933)/"}',  # order
    b'{"DateCreated": "\\/Date(1451606501933)\\/", "SessionId": "s2", "DocumentId": 8}',  # \/
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s3", "DocumentId": "9"}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s4", "DocumentId": 10.0}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s5", "DocumentId": 10.5}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s6", "DocumentId": true}',
    b'{"DateCreated": "/Date(01451606501933)/", "SessionId": "s7", "DocumentId": 11}',
    b'{"DateCreated": "/Date(\xd9\xa3)/", "SessionId": "s8", "DocumentId": 12}',  # Arabic 3
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "   ", "DocumentId": 13}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": 42, "DocumentId": 14}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s9", "DocumentId": 1e400}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s10", "DocumentId": '
    b"123456789012345678901234567890}",
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "caf\xc3\xa9", "DocumentId": 15}',
    b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s11", "DocumentId": 16',  # cut
    b'{"DateCreated": "/Date(915148800000)/", "SessionId": "s12", "DocumentId": 17}',  # 1999
    b'{"DateCreated": "/Date(4102444800000)/", "SessionId": "s13", "DocumentId": 18}',  # 2100
    b"[1, 2]",
    b'"just a string"',
    b"null",
    b"\xff\xfe not utf-8",
    b"GET /Search?criteria=asthma HTTP/1.1 500",
]


@pytest.fixture(scope="module")
def generated_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Lines of a generated log with every kind of bad line, plus the odd ones above."""
    out = tmp_path_factory.mktemp("generated")
    generate(out, start=date(2016, 1, 1), days=2, sessions_per_day=150, dup_rate=0.02,
             late_rate=0.02, bad_rate=0.05, bots=1)
    return [line for _name, line in iter_day_files([out])] + ODD_LINES


def test_spec_test_vector() -> None:
    session, key, event_ms, document = inspect_line(SPEC_RECORD)
    assert (session, key, event_ms, document) == (
        "udcqii55du4gju45bno3d155", "732e5826b0950df4", 1451606501933, 5666868
    )  # fmt: skip
    assert identify(SPEC_RECORD) == (b"udcqii55du4gju45bno3d155", b"732e5826b0950df4")


def test_sample_records_match_the_canonical_dedup_key() -> None:
    for line in SAMPLE_FILE.read_bytes().splitlines():
        record = json.loads(line)
        expected = dedup_key(record["SessionId"], record["DocumentId"],
                             int(record["DateCreated"][6:-2]))
        assert identify(line) == (record["SessionId"].encode(), expected.encode())


def test_fast_path_and_general_path_agree(generated_lines: list[bytes]) -> None:
    for line in generated_lines:
        session, key, _ms, _doc = inspect_line(line)
        assert identify(line) == (
            session.encode() if session is not None else None,
            key.encode() if key is not None else None,
        ), line


def test_agrees_with_the_parser(generated_lines: list[bytes]) -> None:
    """A line the producer schedules as a click is one the parser accepts, with the
    same dedup key; any other line is one the parser quarantines."""
    now_ms = time.time_ns() // 1_000_000
    context = pa.table({"row": list(range(len(generated_lines)))})
    parsed = parse_batch(generated_lines, context=context, read_ms=now_ms)
    clicks, quarantine = parsed.clicks, parsed.quarantine
    parsed = dict(zip(clicks["row"].to_pylist(), clicks["dedup_key"].to_pylist(), strict=True))
    reasons = dict(zip(quarantine["row"].to_pylist(), quarantine["reason"].to_pylist(),
                       strict=True))
    assert len(parsed) + len(reasons) == len(generated_lines)
    assert set(reasons.values()) >= {"bad_encoding", "not_json", "not_object", "bad_date",
                                     "no_session", "bad_document_id", "too_old", "in_future"}
    for row, line in enumerate(generated_lines):
        info = inspect_line(line)
        assert is_click(info, now_ms) == (row in parsed), (line, reasons.get(row))
        if row in parsed:
            assert info[1] == parsed[row]
        elif reasons[row] in ("too_old", "in_future"):
            assert info[1] is not None  # identity readable: the header still carries it
        else:
            assert info[1] is None, (line, reasons[row])


def test_odd_lines_read_as_the_rules_say() -> None:
    by_line = {line: inspect_line(line) for line in ODD_LINES}
    spec = ("udcqii55du4gju45bno3d155", "732e5826b0950df4", 1451606501933, 5666868)
    assert by_line[ODD_LINES[0]] == by_line[ODD_LINES[1]] == spec
    assert by_line[ODD_LINES[2]][1] == dedup_key("s1", 7, 1451606501933)  # any field order
    assert by_line[ODD_LINES[3]][1] == dedup_key("s2", 8, 1451606501933)  # "\/" escape
    assert by_line[ODD_LINES[4]][1] == dedup_key("s3", 9, 1451606501933)  # digit string
    assert by_line[ODD_LINES[5]][1] == dedup_key("s4", 10, 1451606501933)  # integral float
    assert by_line[ODD_LINES[6]] == ("s5", None, 1451606501933, None)  # 10.5
    assert by_line[ODD_LINES[7]] == ("s6", None, 1451606501933, None)  # true
    assert by_line[ODD_LINES[8]][1] == dedup_key("s7", 11, 1451606501933)  # leading zero
    assert by_line[ODD_LINES[9]] == ("s8", None, None, None)  # not ASCII digits
    assert by_line[ODD_LINES[10]][0] is None and by_line[ODD_LINES[11]][0] is None
    assert by_line[ODD_LINES[12]][1] is None and by_line[ODD_LINES[13]][1] is None
    assert identify(ODD_LINES[14]) == ("café".encode(), dedup_key("café", 15,
                                                                  1451606501933).encode())
    assert by_line[ODD_LINES[15]] == (None, None, None, None)  # cut short: not JSON
    for line in ODD_LINES[18:]:
        assert identify(line) == (None, None)


# The usual line's first bytes (the fast path reads the identity from them), then a tail
# that decides whether the whole line is JSON: each validator edge the fast path meets.
USUAL_HEAD = b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s20", "DocumentId": 21'
USUAL_KEY = (b"s20", dedup_key("s20", 21, 1451606501933).encode())
HOSTILE_TAILS = {
    b', "Title": "ok"}': USUAL_KEY,
    b', "Title": "\\ud83d\\ude00 escaped pair"}': USUAL_KEY,
    b', "Big": 123456789012345678901234567890}': USUAL_KEY,  # orjson takes it, simdjson not
    b', "Big": 18446744073709551616}': USUAL_KEY,  # past uint64: a float for orjson
    b', "Deep": ' + b"[" * 1022 + b"]" * 1022 + b"}": USUAL_KEY,  # 1023 levels: the limit
    b', "Title": "x\\ud800"}': USUAL_KEY,  # lone surrogate: json.loads takes it
    b', "Title": "\xff"}': (None, None),  # not UTF-8
    b', "Title": "\xed\xa0\x80"}': USUAL_KEY,  # encoded surrogate: json.loads takes it
    b', "Title": "tab\tinside"}': (None, None),  # a raw control character
    b', "Title": NaN}': USUAL_KEY,  # NaN: json.loads takes it
    b', "Title": "x"} trailing': (None, None),
    b', "Title": "x",}': (None, None),
    b"": (None, None),  # cut short after the document id
}


def test_fast_path_validates_the_whole_line() -> None:
    """A line that starts the usual way is a click only when all of it is JSON; where the
    fast path's validator (simdjson) refuses a line orjson or json.loads takes, the
    general path answers, so both paths agree on every edge."""
    lines = [USUAL_HEAD + tail for tail in HOSTILE_TAILS]
    assert identify_all(lines) == list(HOSTILE_TAILS.values())
    # One level deeper than orjson allows: what json.loads makes of it depends on the
    # interpreter's recursion limit, so only the agreement of the two paths is exact.
    lines.append(USUAL_HEAD + b', "Deep": ' + b"[" * 1023 + b"]" * 1023 + b"}")
    for line, found in zip(lines, identify_all(lines), strict=True):
        session, key, _ms, _doc = inspect_line(line)
        assert found == (session.encode() if session else None, key.encode() if key else None)


def test_server_assignment_is_a_stable_hash_of_the_session() -> None:
    session = b"udcqii55du4gju45bno3d155"
    assert server_of(SPEC_RECORD, session, 3) == xxhash.xxh64_intdigest(session) % 3
    assert server_of(SPEC_RECORD, session, 1) == 0
    assert server_of(b"not json", None, 7) == xxhash.xxh64_intdigest(b"not json") % 7
    assert {server_of(b"x", f"s{i}".encode(), 3) for i in range(100)} == {0, 1, 2}


def test_rebase_changes_only_the_date_and_appends_the_original() -> None:
    rebased = rebased_line(SPEC_RECORD, 1451606501933, 1795000000123)
    assert rebased == SPEC_RECORD.replace(b"1451606501933", b"1795000000123")[:-1] + (
        b', "OriginalDateCreated": "/Date(1451606501933)/"}'
    )
    record = orjson.loads(rebased)
    assert record["DateCreated"] == "/Date(1795000000123)/"
    assert record["OriginalDateCreated"] == "/Date(1451606501933)/"
    assert inspect_line(rebased)[1] == dedup_key("udcqii55du4gju45bno3d155", 5666868,
                                                 1795000000123)


def test_rebase_keeps_array_punctuation_and_escapes() -> None:
    line = b'[{"DateCreated": "\\/Date(1451606501933)\\/", "SessionId": "s", "DocumentId": 1},'
    rebased = rebased_line(line, 1451606501933, 1795000000000)
    assert rebased == (b'[{"DateCreated": "\\/Date(1795000000000)\\/", "SessionId": "s", '
                       b'"DocumentId": 1, "OriginalDateCreated": "/Date(1451606501933)/"},')
    assert inspect_line(rebased)[2] == 1795000000000


def test_rebase_falls_back_to_reserialising_unusual_records() -> None:
    # Two DateCreated spellings (a nested one): the bytes are not patched blindly.
    line = (b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "s", "DocumentId": 1, '
            b'"Extra": {"DateCreated": "/Date(1451606501933)/"}}')
    record = orjson.loads(rebased_line(line, 1451606501933, 1795000000000))
    assert record["DateCreated"] == "/Date(1795000000000)/"
    assert record["OriginalDateCreated"] == "/Date(1451606501933)/"
    assert record["Extra"] == {"DateCreated": "/Date(1451606501933)/"}
