"""parse_batch: the one definition of a valid TripClick record (spec: tripclick-format.md)."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tripflow.records.dedup import dedup_key
from tripflow.records.parser import parse_batch
from tripflow.records.schema import CLICK_SCHEMA, QUARANTINE_SCHEMA, Reason

SAMPLE_FILE = Path(__file__).resolve().parents[3] / "shared/data/tripclick_sample_2016-01-01.jsonl"
SAMPLE_LINES = SAMPLE_FILE.read_bytes().splitlines()
SPEC_EXAMPLE = SAMPLE_LINES[0]
READ_MS = 1_451_700_000_000  # 2016-01-02T02:00Z, the morning after the sample day
EVENT_MS = 1_451_606_501_933  # the spec example's DateCreated


def record(**fields: Any) -> bytes:
    """A valid record (the spec example) with some fields replaced; ... removes one."""
    values = json.loads(SPEC_EXAMPLE)
    for name, value in fields.items():
        if value is ...:
            del values[name]
        else:
            values[name] = value
    return json.dumps(values).encode()


def only_click(value: bytes) -> dict[str, Any]:
    """The one click `value` parses to (fails the test if it is quarantined)."""
    result = parse_batch([value], read_ms=READ_MS)
    assert result.quarantine.num_rows == 0, result.quarantine.to_pylist()
    (click,) = result.clicks.to_pylist()
    return click


def test_spec_example_parses_to_exact_values() -> None:
    result = parse_batch([SPEC_EXAMPLE], read_ms=READ_MS)
    assert result.clicks.schema == CLICK_SCHEMA
    assert result.quarantine.schema == QUARANTINE_SCHEMA
    assert result.clicks.to_pylist() == [
        {
            "dedup_key": "732e5826b0950df4",
            "event_ts": datetime(2016, 1, 1, 0, 1, 41, 933_000, tzinfo=UTC),
            "event_date": date(2016, 1, 1),
            "session_id": "udcqii55du4gju45bno3d155",
            "document_id": 5666868,
            "url": "http://sogc.org/wp-content/uploads/2014/12/gui317TU1501E1.pdf",
            "title": (
                "Technical Update on Tissue Morcellation During Gynaecologic Surgery: Its Uses,"
                " Complications and Risks of Unsuspected Malignancy"
            ),
            "doi": None,
            "keywords": "Laparoscopic gynecology",
            "clinical_areas": ["Oncology", "Surgery"],
            "unmapped_areas": [],
            "documents": [],
        }
    ]
    assert dedup_key("udcqii55du4gju45bno3d155", 5666868, EVENT_MS) == "732e5826b0950df4"


def test_whole_sample_parses_with_no_quarantine() -> None:
    result = parse_batch(SAMPLE_LINES, read_ms=READ_MS)
    assert result.quarantine.num_rows == 0
    assert result.clicks.num_rows == 34
    sent = [json.loads(line) for line in SAMPLE_LINES]
    clicks = result.clicks.to_pylist()
    for click, fields in zip(clicks, sent, strict=True):
        epoch_ms = int(fields["DateCreated"][6:-2])
        assert click["session_id"] == fields["SessionId"]
        assert click["document_id"] == fields["DocumentId"]
        assert click["event_ts"].timestamp() * 1000 == pytest.approx(epoch_ms, abs=0.5)
        assert click["dedup_key"] == dedup_key(fields["SessionId"], fields["DocumentId"], epoch_ms)
        assert click["keywords"] == fields["Keywords"]  # as sent, trailing spaces and all
        assert click["title"] == fields["Title"]
        assert click["doi"] == (fields["DOI"] or None)
        assert click["documents"] == []
        assert click["unmapped_areas"] == []
    assert {click["event_date"] for click in clicks} == {date(2016, 1, 1)}


@pytest.mark.parametrize(
    ("sent_areas", "expected"),
    [
        # a repeat in another spelling counts once
        ("Pediatrics,neurology,Neurology", ["Neurology", "Pediatrics"]),
        # lower-case and slug spellings, with a repeat
        (
            "Endocrinology,endocrinology,obgyn,pediatrics,hematology,neurology,preventive_medicine",
            ["Endocrinology", "Hematology", "Neurology", "OB-Gyn", "Pediatrics",
             "Preventive Medicine"],
        ),
        ("Endocrinology,Cardiology", ["Cardiology", "Endocrinology"]),  # no leading comma
        (",OB-Gyn,Women's Health", ["OB-Gyn", "Women's Health"]),
        ("", []),
    ],
)
def test_quirky_sample_areas(sent_areas: str, expected: list[str]) -> None:
    clicks = parse_batch(SAMPLE_LINES, read_ms=READ_MS).clicks.to_pylist()
    matching = [
        click
        for click, line in zip(clicks, SAMPLE_LINES, strict=True)
        if json.loads(line)["ClinicalAreas"] == sent_areas
    ]
    assert matching  # the sample holds this quirk
    assert all(click["clinical_areas"] == expected for click in matching)


BAD_LINES: list[tuple[bytes, Reason]] = [
    (b'{"DateCreated": "/Date(1451606501933)/", "SessionId": "\xff\xfe"}', Reason.BAD_ENCODING),
    (b"\xc3\x28", Reason.BAD_ENCODING),
    (b"", Reason.NOT_JSON),
    (b"   \r\n", Reason.NOT_JSON),
    (b"[", Reason.NOT_JSON),
    (b"]", Reason.NOT_JSON),
    (b"{", Reason.NOT_JSON),
    (SPEC_EXAMPLE[:60], Reason.NOT_JSON),
    (b"{'DateCreated': 1}", Reason.NOT_JSON),
    (b"[1,2]", Reason.NOT_OBJECT),
    (b'"str"', Reason.NOT_OBJECT),
    (b"null", Reason.NOT_OBJECT),
    (b"42", Reason.NOT_OBJECT),
    (record(DateCreated="/Date(abc)/"), Reason.BAD_DATE),
    (record(DateCreated=...), Reason.BAD_DATE),
    (record(DateCreated=None), Reason.BAD_DATE),
    (record(DateCreated=EVENT_MS), Reason.BAD_DATE),
    (record(DateCreated="/Date(1451606501933+0100)/"), Reason.BAD_DATE),
    (record(DateCreated="/Date(99999999999999999999)/"), Reason.BAD_DATE),
    (record(SessionId=""), Reason.NO_SESSION),
    (record(SessionId="   "), Reason.NO_SESSION),
    (record(SessionId=...), Reason.NO_SESSION),
    (record(SessionId=None), Reason.NO_SESSION),
    (record(SessionId=12345), Reason.NO_SESSION),
    (record(DocumentId=1.5), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId="x"), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId="12a"), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId=...), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId=None), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId=True), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId=[1]), Reason.BAD_DOCUMENT_ID),
    (record(DocumentId=2**64), Reason.BAD_DOCUMENT_ID),
    (record(DateCreated="/Date(915148800000)/"), Reason.TOO_OLD),  # 1999-01-01
    (record(DateCreated="/Date(946684799999)/"), Reason.TOO_OLD),  # 1 ms before 2000
    (record(DateCreated=f"/Date({READ_MS + 2 * 86_400_000})/"), Reason.IN_FUTURE),
    (record(DateCreated=f"/Date({READ_MS + 86_400_001})/"), Reason.IN_FUTURE),
    (record(DateCreated="/Date(9223372036854775807)/"), Reason.IN_FUTURE),  # int64 max
    # with several faults, the first in Reason's order wins
    (record(DateCreated="/Date(abc)/", SessionId=""), Reason.BAD_DATE),
    (record(SessionId="", DocumentId="x"), Reason.NO_SESSION),
    (record(DocumentId="x", DateCreated="/Date(915148800000)/"), Reason.BAD_DOCUMENT_ID),
]


@pytest.mark.parametrize(("value", "reason"), BAD_LINES)
def test_bad_line_is_quarantined_with_its_reason(value: bytes, reason: Reason) -> None:
    result = parse_batch([value], read_ms=READ_MS)
    assert result.clicks.num_rows == 0
    assert result.quarantine.to_pylist() == [
        {"raw": value, "reason": reason.value, "detail": result.quarantine["detail"][0].as_py()}
    ]
    assert result.quarantine["detail"][0].as_py()  # a human hint is always there


def test_bad_lines_cover_every_reason() -> None:
    assert {reason for _value, reason in BAD_LINES} == set(Reason)


def test_edge_values_still_valid() -> None:
    assert only_click(record(DateCreated="/Date(946684800000)/"))["event_date"] == date(2000, 1, 1)
    exactly_one_day_ahead = record(DateCreated=f"/Date({READ_MS + 86_400_000})/")
    assert only_click(exactly_one_day_ahead)["event_date"] == date(2016, 1, 3)


def test_all_bad_lines_in_one_batch_keep_order_and_raw_bytes() -> None:
    values = [value for value, _reason in BAD_LINES]
    result = parse_batch(values, read_ms=READ_MS)
    assert result.clicks.num_rows == 0
    assert result.quarantine["raw"].to_pylist() == values
    assert result.quarantine["reason"].to_pylist() == [reason.value for _v, reason in BAD_LINES]


def test_null_value_is_not_json_with_empty_raw() -> None:
    # a Kafka tombstone: no bytes at all
    result = parse_batch([None, SPEC_EXAMPLE], read_ms=READ_MS)
    assert result.clicks.num_rows == 1
    assert result.quarantine.select(["raw", "reason"]).to_pylist() == [
        {"raw": b"", "reason": "not_json"}
    ]


@pytest.mark.parametrize(
    "value",
    [
        b"[" + SPEC_EXAMPLE + b",",
        SPEC_EXAMPLE + b",",
        SPEC_EXAMPLE + b"]",
        b"[" + SPEC_EXAMPLE + b"]",
        b"  [ " + SPEC_EXAMPLE + b" ] ,\r\n",
        SPEC_EXAMPLE + b"\n",
        SPEC_EXAMPLE + b"\r\n",
        b"\t" + SPEC_EXAMPLE + b" ",
        b"\xef\xbb\xbf" + SPEC_EXAMPLE,  # a byte-order mark
    ],
)
def test_array_style_and_padded_lines_parse(value: bytes) -> None:
    assert only_click(value) == only_click(SPEC_EXAMPLE)


def test_line_ending_in_an_inner_list_is_still_bad() -> None:
    # a truncated record whose last character is the ']' of Documents stays not_json
    truncated = SPEC_EXAMPLE[: SPEC_EXAMPLE.rindex(b"]") + 1]
    result = parse_batch([truncated], read_ms=READ_MS)
    assert result.quarantine["reason"].to_pylist() == ["not_json"]


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        ([5, 6, 7], [5, 6, 7]),
        ([], []),
        (None, None),
        (..., None),
        ("1:0.5,2:0.25", [1, 2]),
        ("", []),
        ("1,2,3", [1, 2, 3]),
        ("1:0.5,,x:0.2, 3 :0.1,", [1, 3]),  # empty and unparseable pieces are dropped
        # list elements follow the same rule as pieces: integers and digit strings only
        ([1, "2", 2.5, None, True, -3, 4.0, [5]], [1, 2, -3]),
        ([1, 2**64], [1]),  # beyond int64: dropped
        (7, None),  # not a list or string: unusable
        ({"a": 1}, None),
    ],
)
def test_documents_forms(documents: Any, expected: list[int] | None) -> None:
    assert only_click(record(Documents=documents))["documents"] == expected


def test_twenty_id_documents_list() -> None:
    ids = list(range(9_000_000, 9_000_020))
    assert only_click(record(Documents=ids))["documents"] == ids


@pytest.mark.parametrize(
    ("document_id", "expected"),
    [(5666868, 5666868), ("123", 123), (5.0, 5), (1e3, 1000), (2**63 - 1, 2**63 - 1), (-4, -4)],
)
def test_document_id_forms_accepted(document_id: Any, expected: int) -> None:
    click = only_click(record(DocumentId=document_id))
    assert click["document_id"] == expected
    assert click["dedup_key"] == dedup_key("udcqii55du4gju45bno3d155", expected, EVENT_MS)


def test_optional_fields() -> None:
    missing = only_click(record(Url=..., Title=..., DOI=..., Keywords=..., ClinicalAreas=...))
    assert [missing[name] for name in ("url", "title", "doi", "keywords")] == [None] * 4
    assert missing["clinical_areas"] is None
    assert missing["unmapped_areas"] is None
    nulls = only_click(record(Url=None, Title=None, DOI=None, Keywords=None, ClinicalAreas=None))
    assert [nulls[name] for name in ("url", "title", "doi", "keywords")] == [None] * 4
    sent = only_click(record(Title="", Keywords=" Nsaids  ", DOI="10.1/x", ClinicalAreas=""))
    assert (sent["title"], sent["keywords"], sent["doi"]) == ("", " Nsaids  ", "10.1/x")
    assert (sent["clinical_areas"], sent["unmapped_areas"]) == ([], [])
    other_types = only_click(record(Keywords=5, Title=["a"]))
    assert (other_types["keywords"], other_types["title"]) == ("5", '["a"]')


def test_json_escapes_are_decoded() -> None:
    value = (
        b'{"DateCreated": "\\/Date(1451606501933)\\/", "SessionId": "s\\u00e9ss", '
        b'"DocumentId": 1, "Url": "http:\\/\\/x.org\\/a", "Title": "caf\\u00e9 \\"q\\""}'
    )
    click = only_click(value)
    assert (click["session_id"], click["url"], click["title"]) == (
        "séss", "http://x.org/a", 'café "q"'
    )
    assert click["dedup_key"] == dedup_key("séss", 1, EVENT_MS)


def test_unknown_area_is_kept_title_cased_and_listed_as_unmapped() -> None:
    click = only_click(record(ClinicalAreas=",tropical_medicine,Oncology,obgyn"))
    assert click["clinical_areas"] == ["OB-Gyn", "Oncology", "Tropical Medicine"]
    assert click["unmapped_areas"] == ["Tropical Medicine"]
    spelled_twice = only_click(record(ClinicalAreas="Space Medicine,space_medicine"))
    assert spelled_twice["clinical_areas"] == ["Space Medicine"]
    assert spelled_twice["unmapped_areas"] == ["Space Medicine"]


# -- hostile bytes (spec "Bad input", "Hostile bytes") ----------------------------------
def test_escaped_nul_is_removed_from_every_string_field_and_counted() -> None:
    nul = "\x00"  # json.dumps writes it as the escape \u0000
    value = record(SessionId=f"udcqii55du{nul}4gju45bno3d155", Title=f"Tis{nul}sue",
                   Url=f"http://x{nul}.org", DOI=f"10.1{nul}/x", Keywords=f"a{nul}b",
                   ClinicalAreas=f",Onco{nul}logy,Space{nul} Medicine")
    plain = record(SessionId="bbbbbbbbbbbbbbbbbbbbbbbb")
    result = parse_batch([value, plain], read_ms=READ_MS)
    assert result.quarantine.num_rows == 0 and result.nul_removed == 1
    click = result.clicks.to_pylist()[0]
    assert (click["session_id"], click["title"], click["url"], click["doi"],
            click["keywords"]) == ("udcqii55du4gju45bno3d155", "Tissue", "http://x.org",
                                   "10.1/x", "ab")
    assert click["clinical_areas"] == ["Oncology", "Space Medicine"]
    # the key of the click as stored, so both paths and every rerun agree
    assert click["dedup_key"] == dedup_key("udcqii55du4gju45bno3d155", 5666868, EVENT_MS)


def test_a_session_of_nul_only_is_no_session() -> None:
    result = parse_batch([record(SessionId="\x00\x00")], read_ms=READ_MS)
    assert result.clicks.num_rows == 0 and result.nul_removed == 0
    assert result.quarantine.column("reason").to_pylist() == ["no_session"]


def test_quarantine_detail_never_holds_nul() -> None:
    escaped = record(DateCreated="/Date(14516\x0006501933)/")  # the escape \u0000
    raw_in_date = escaped.replace(b"\\u0000", b"\x00")
    raw_in_title = record(Title="aXb").replace(b"aXb", b"a\x00b")
    result = parse_batch([escaped, raw_in_date, raw_in_title, b"\x00"], read_ms=READ_MS)
    assert result.clicks.num_rows == 0
    rows = result.quarantine.to_pylist()
    assert [row["reason"] for row in rows] == ["bad_date", "not_json", "not_json", "not_json"]
    assert [row["raw"] for row in rows] == [escaped, raw_in_date, raw_in_title, b"\x00"]
    for row in rows:
        assert "\x00" not in row["detail"]
    assert rows[0]["detail"] == "DateCreated not /Date(<digits>)/: /Date(14516\\u000006501933)/"


def test_event_date_is_the_utc_date() -> None:
    last_ms = only_click(record(DateCreated="/Date(1451692799999)/"))
    next_day = only_click(record(DateCreated="/Date(1451692800000)/"))
    assert (last_ms["event_date"], next_day["event_date"]) == (date(2016, 1, 1), date(2016, 1, 2))
    assert next_day["event_ts"] == datetime(2016, 1, 2, tzinfo=UTC)


def test_repeated_key_first_occurrence_counts() -> None:
    value = SPEC_EXAMPLE[:-1] + b', "DocumentId": 7}'
    assert only_click(value)["document_id"] == 5666868


def test_context_goes_to_both_outputs_and_every_row_lands_once() -> None:
    values = [SAMPLE_LINES[0], b"nope", SAMPLE_LINES[1], b"[1]", SAMPLE_LINES[2], b"\xff"]
    context = pa.table(
        {
            "partition": pa.array([3] * 6, pa.int32()),
            "offset": pa.array([10, 11, 12, 13, 14, 15], pa.int64()),
        }
    )
    result = parse_batch(values, context=context, read_ms=READ_MS)
    assert result.clicks.column_names == [*CLICK_SCHEMA.names, "partition", "offset"]
    assert result.quarantine.column_names == [*QUARANTINE_SCHEMA.names, "partition", "offset"]
    assert result.clicks.schema.field("partition").type == pa.int32()
    assert result.clicks["offset"].to_pylist() == [10, 12, 14]
    assert result.quarantine["offset"].to_pylist() == [11, 13, 15]
    assert result.quarantine["raw"].to_pylist() == [b"nope", b"[1]", b"\xff"]
    assert result.clicks["document_id"].to_pylist() == [5666868, 5687900, 1205966]


def test_order_is_kept_in_a_large_mixed_batch() -> None:
    # > one UTF-8 check slice (4096 rows), with a bad-encoding row in the middle
    values = [record(SessionId=f"s{index:06d}", DocumentId=index) for index in range(10_000)]
    bad_at = {17, 4_100, 9_999}
    for index in bad_at:
        values[index] = b"\x80" + values[index]
    context = pa.table({"line": pa.array(range(10_000), pa.int64())})
    result = parse_batch(values, context=context, read_ms=READ_MS)
    good = [index for index in range(10_000) if index not in bad_at]
    assert result.clicks["line"].to_pylist() == good
    assert result.clicks["document_id"].to_pylist() == good
    assert result.clicks["session_id"].to_pylist() == [f"s{index:06d}" for index in good]
    assert result.quarantine["line"].to_pylist() == sorted(bad_at)
    assert set(result.quarantine["reason"].to_pylist()) == {"bad_encoding"}


def test_context_must_match_values() -> None:
    with pytest.raises(ValueError, match="context has 2 rows for 1 values"):
        parse_batch([SPEC_EXAMPLE], context=pa.table({"offset": [1, 2]}))
    with pytest.raises(ValueError, match="clash"):
        parse_batch([SPEC_EXAMPLE], context=pa.table({"reason": ["x"]}))


def test_read_ms_per_row_and_default_now() -> None:
    values = [SPEC_EXAMPLE, SPEC_EXAMPLE]
    result = parse_batch(values, read_ms=pa.array([READ_MS, EVENT_MS - 2 * 86_400_000]))
    assert result.clicks.num_rows == 1
    assert result.quarantine["reason"].to_pylist() == ["in_future"]

    now_ms = time.time_ns() // 1_000_000
    soon = record(DateCreated=f"/Date({now_ms + 3_600_000})/")
    later = record(DateCreated=f"/Date({now_ms + 3 * 86_400_000})/")
    result = parse_batch([soon, later])
    assert result.clicks.num_rows == 1
    assert result.quarantine["raw"].to_pylist() == [later]


@pytest.mark.parametrize(
    "as_input",
    [
        lambda lines: pa.array(lines, pa.binary()),
        lambda lines: pa.array(lines, pa.large_binary()),
        lambda lines: pa.array([line.decode() for line in lines], pa.string()),
        lambda lines: pa.array([line.decode() for line in lines], pa.large_string()),
        lambda lines: pa.chunked_array([pa.array(lines[:10]), pa.array(lines[10:])]),
    ],
)
def test_arrow_inputs_give_the_same_result(as_input: Any) -> None:
    values = [*SAMPLE_LINES, b"oops"]
    expected = parse_batch(values, read_ms=READ_MS)
    result = parse_batch(as_input(values), read_ms=READ_MS)
    assert result.clicks.equals(expected.clicks)
    assert result.quarantine.equals(expected.quarantine)


@pytest.mark.parametrize("bad_every", [3, 1000])
def test_many_chunks_with_scattered_bad_rows_give_the_same_result(bad_every: int) -> None:
    # Bad rows between good ones in several chunks: few runs of good rows are taken as
    # slices, many (bad_every=3 gives > 256 runs) by one filter; both must be exact.
    bad = [b"oops", b"\xff{", None, b"[1,2]"]
    values = [bad[i % len(bad)] if i % bad_every == 1 else SAMPLE_LINES[i % len(SAMPLE_LINES)]
              for i in range(3_000)]
    expected = parse_batch(values, read_ms=READ_MS)
    chunked = pa.chunked_array([pa.array(values[i:i + 700], pa.binary())
                                for i in range(0, len(values), 700)])
    result = parse_batch(chunked, context=pa.table({"i": range(len(values))}), read_ms=READ_MS)
    assert result.clicks.drop_columns(["i"]).equals(expected.clicks)
    assert result.quarantine.drop_columns(["i"]).equals(expected.quarantine)
    assert result.quarantine["i"].to_pylist() == [i for i in range(3_000) if i % bad_every == 1]
    assert result.clicks.num_rows == 3_000 - len(result.quarantine)


def test_empty_batch() -> None:
    result = parse_batch([], context=pa.table({"offset": pa.array([], pa.int64())}))
    assert result.clicks.num_rows == result.quarantine.num_rows == 0
    assert result.clicks.column_names == [*CLICK_SCHEMA.names, "offset"]


def test_sliced_arrow_input_with_nulls_and_bad_bytes() -> None:
    values = pa.array([b"skipped", SPEC_EXAMPLE, b"\xff{", None, b"\xfe", SAMPLE_LINES[1]])
    result = parse_batch(values.slice(1), read_ms=READ_MS)
    assert result.clicks["document_id"].to_pylist() == [5666868, 5687900]
    assert result.quarantine.select(["raw", "reason"]).to_pylist() == [
        {"raw": b"\xff{", "reason": "bad_encoding"},
        {"raw": b"", "reason": "not_json"},
        {"raw": b"\xfe", "reason": "bad_encoding"},
    ]


def test_read_ms_as_timestamps() -> None:
    read_at = pa.array([READ_MS, EVENT_MS - 2 * 86_400_000], pa.timestamp("ms", tz="UTC"))
    result = parse_batch([SPEC_EXAMPLE, SPEC_EXAMPLE], read_ms=read_at.cast(pa.timestamp("us")))
    assert result.clicks.num_rows == 1
    assert result.quarantine["reason"].to_pylist() == ["in_future"]
