"""Hostile input for the whole pipeline: valid TripClick records, mutated at random.

`fuzz_files` writes day files whose lines are valid records and mutations of them —
random bytes, truncation, U+0000 raw and escaped, huge fields (some over the topic's
message limit), wrong types, duplicated keys, unknown clinical areas, lines of array
punctuation, exact resends — and returns what it wrote. `account` then checks, on the
real database and lake after produce → stream and bronze → silver → marts, that every
line is accounted for exactly once. Shared by tests/pipeline/test_fuzz.py (short) and
bench/bench_fuzz.py (long).

Which lines are clicks is decided by tripflow's parser (`parse_batch`) over the lines as
written: the parser's own rules are tested against the spec elsewhere; here the question
is whether any step loses, doubles, or chokes on what the parser decides.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from tripflow import lake
from tripflow.records.areas import CANONICAL_AREAS as CANONICAL
from tripflow.records.parser import parse_batch
from tripflow.settings import Settings

DAY = dt.date(2016, 3, 1)
DAY_MS = int(dt.datetime.combine(DAY, dt.time(), dt.UTC).timestamp() * 1000)
PUNCTUATION = (b"[", b"]", b"[]", b",", b"", b"  ")
NO_RECORD = re.compile(rb"[\s\[\],]*")  # what the reader skips (blank, or only punctuation)
NEWLINES = (0x0A, 0x0D)  # a line of a file cannot hold them
TOO_LARGE_BYTES = 1_100_000  # over the default message limit (1,000,000 bytes)
AREAS = (",Oncology,Surgery", "neurology,Neurology", ",Space Medicine,space_medicine",
         "obgyn", "", "tropical_medicine,Cardiology")


def valid_record(rng: random.Random, index: int) -> dict[str, object]:
    session = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz012345") for _ in range(24))
    return {
        "DateCreated": f"/Date({DAY_MS + rng.randrange(86_400_000)})/",
        "SessionId": session,
        "DocumentId": rng.randrange(1, 3_000),
        "Url": f"http://example.org/{index}",
        "Title": rng.choice(["Asthma in children", "", "Café au lait spots", "Tissue"]),
        "DOI": rng.choice(["", "10.1000/x"]),
        "ClinicalAreas": rng.choice(AREAS),
        "Keywords": rng.choice(["asthma", "", "title:cancer  "]),
        "Documents": rng.choice([[], [1, 2, 3], "4:0.5,5:0.25", None]),
    }


def _escape_nul(line: bytes, rng: random.Random) -> bytes:
    field_name = rng.choice([b'"Title": "', b'"SessionId": "', b'"Keywords": "', b'"Url": "',
                             b'"DateCreated": "/Date(1', b'"ClinicalAreas": "'])
    at = line.find(field_name)
    if at < 0:
        return line
    at += len(field_name)
    return line[:at] + b"\\u0000" + line[at:]


def _wrong_type(record: dict[str, object], rng: random.Random) -> dict[str, object]:
    name = rng.choice(["DocumentId", "SessionId", "DateCreated", "Documents", "ClinicalAreas",
                       "Title"])
    record[name] = rng.choice([None, True, 1.5, "12x", [1, "a"], {"a": 1}, 10**30, -1, ""])
    return record


def _duplicated_key(line: bytes, rng: random.Random) -> bytes:
    name = rng.choice([b"SessionId", b"DocumentId", b"DateCreated", b"Title"])
    value = rng.choice([b'"zzzzzzzzzzzzzzzzzzzzzzzz"', b"7", b'"/Date(1)/"', b"null"])
    return line[:-1] + b', "' + name + b'": ' + value + b"}"


def _random_bytes(line: bytes, rng: random.Random) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        byte = rng.choice([0, 0xFF, 0xC3, 0x1F, 0x22, 0x5C, 0x7B, 0x7D, rng.randrange(256)])
        data[at:at] = bytes([byte if byte not in NEWLINES else 0x20])
    return bytes(data)


def mutate(record: dict[str, object], rng: random.Random) -> bytes:
    """One hostile line made from a valid record."""
    line = json.dumps(record, ensure_ascii=False).encode()
    kind = rng.randrange(9)
    if kind == 0:
        return _random_bytes(line, rng)
    if kind == 1:
        return line[: rng.randrange(1, len(line))]
    if kind == 2:  # a raw 0x00 byte somewhere
        at = rng.randrange(len(line))
        return line[:at] + b"\x00" + line[at:]
    if kind == 3:
        return _escape_nul(line, rng)
    if kind == 4:  # a huge field that still fits the topic
        record["Title"] = "x" * rng.randrange(10_000, 300_000)
        return json.dumps(record).encode()
    if kind == 5:
        return json.dumps(_wrong_type(record, rng), ensure_ascii=False).encode()
    if kind == 6:
        return _duplicated_key(line, rng)
    if kind == 7:  # array-style: the record with punctuation around it
        return b"[" + line + rng.choice([b",", b"]", b""])
    record["ClinicalAreas"] = rng.choice([",Space Medicine", "space_medicine,Oncology",
                                          "\x00Oncology"])
    return json.dumps(record).encode()


@dataclass
class FuzzInput:
    files: list[Path]
    lines: list[bytes] = field(default_factory=list)  # every line written, punctuation too
    punctuation: int = 0  # lines that hold no record
    too_large: list[bytes] = field(default_factory=list)  # lines over the message limit


def fuzz_files(folder: Path, *, records: int, seed: int, bad_share: float = 0.3,
               resend_share: float = 0.05, too_large: int = 2) -> FuzzInput:
    """Write one day file of `records` lines (plus punctuation, resends and too-large
    lines) into `folder`."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for index in range(records):
        record = valid_record(rng, index)
        if rng.random() < bad_share:
            lines.append(mutate(record, rng))
        else:
            lines.append(json.dumps(record, ensure_ascii=False).encode())
        if rng.random() < resend_share and lines:
            lines.append(rng.choice(lines))  # the same bytes again: a resend
        if rng.random() < 0.02:
            lines.append(rng.choice(PUNCTUATION))
    big = []
    for index in range(too_large):
        record = valid_record(rng, records + index)
        record["Title"] = "y" * (TOO_LARGE_BYTES + index)
        big.append(json.dumps(record).encode())
    for line in big:
        lines.insert(rng.randrange(len(lines) + 1), line)
    path = folder / f"{DAY.isoformat()}.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    # What the reader skips: blank lines and lines of only brackets/commas/whitespace.
    punctuation = sum(1 for line in lines if NO_RECORD.fullmatch(line))
    return FuzzInput([path], lines, punctuation, big)


@dataclass
class Expected:
    """What the pipeline must hold for a FuzzInput, by tripflow's parser."""

    records: int  # lines that reach the topic
    clicks: int  # distinct valid clicks
    duplicates: int  # valid records whose click was already seen
    bad_distinct: int  # distinct raw bytes quarantined (too-large lines included)
    bad_seen: int  # bad lines in all
    nul_removed: int  # valid records that had U+0000 removed (resends counted)
    areas: Counter[str] = field(default_factory=Counter)  # distinct clicks per area


def expected(data: FuzzInput, read_ms: int) -> Expected:
    sent = [line for line in data.lines
            if not NO_RECORD.fullmatch(line) and line not in data.too_large]
    parsed = parse_batch(pa.array(sent, pa.binary()), read_ms=read_ms)
    keys = parsed.clicks.column("dedup_key").to_pylist()
    first: dict[str, list[str]] = {}
    for key, areas in zip(keys, parsed.clicks.column("clinical_areas").to_pylist(),
                          strict=True):
        first.setdefault(key, areas or [])
    areas = Counter(area for names in first.values() for area in names)
    bad = parsed.quarantine.column("raw").to_pylist() + data.too_large
    return Expected(records=len(sent), clicks=len(first), duplicates=len(keys) - len(first),
                    bad_distinct=len(set(bad)), bad_seen=len(bad),
                    nul_removed=parsed.nul_removed, areas=areas)


def run_pipeline(tripflow: Callable[..., str], folder: Path) -> str:
    """produce → stream and bronze → silver → marts, each a real `tripflow` command that
    must exit 0 (`tripflow(*args)` runs one and returns its output). The produce output."""
    produced = tripflow("produce", str(folder), "--servers", "2")
    tripflow("stream", "--until-idle", "3")
    tripflow("bronze", "--until-idle", "3")
    tripflow("silver")
    tripflow("marts", "--changed")
    return produced


def account(settings: Settings, data: FuzzInput, want: Expected, produced: str) -> dict:
    """Check every layer against `want`; the figures, for a report."""
    # The kit's own sum: every line written is one of these.
    assert want.clicks + want.duplicates + want.bad_seen + data.punctuation == len(data.lines)
    assert f"{len(data.too_large):,} too large (quarantined)" in produced
    assert f"{data.punctuation:,} lines without a record skipped" in produced

    bronze = lake.open_table(settings, lake.BRONZE).to_pyarrow_table(columns=["offset"])
    assert bronze.num_rows == want.records
    silver = lake.open_table(settings, lake.SILVER).to_pyarrow_table(
        columns=["dedup_key", "clinical_areas"])
    assert silver.num_rows == want.clicks
    assert pc.count_distinct(silver.column("dedup_key")).as_py() == want.clicks
    assert Counter(area for areas in silver.column("clinical_areas").to_pylist()
                   for area in areas or []) == want.areas

    with psycopg.connect(settings.pg_dsn) as conn:
        distinct, seen = conn.execute(
            "select count(*), coalesce(sum(seen_count), 0) from tripflow.quarantine").fetchone()
        too_large = conn.execute(
            "select source_file, raw_length from tripflow.quarantine "
            "where reason = 'too_large' order by raw_length").fetchall()
        records, clicks_new, quarantined, nul_removed = conn.execute(
            "select records, clicks_new, quarantined, nul_removed "
            "from tripflow.hot_state").fetchone()
        (total,) = conn.execute("select sum(total_events) from mart_daily_traffic").fetchone()
        cold_areas = dict(conn.execute(
            "select clinical_area, search_count from mart_clinical_areas").fetchall())
        hot_areas = dict(conn.execute(
            "select clinical_area, click_count from mart_realtime_clinical_trend_24h "
            "where snapshot_ts = (select max(snapshot_ts) "
            "                     from mart_realtime_clinical_trend_24h)").fetchall())
    assert (distinct, seen) == (want.bad_distinct, want.bad_seen)
    assert too_large == [(data.files[0].name, len(line))
                         for line in sorted(data.too_large, key=len)]
    assert (records, clicks_new) == (want.records, want.clicks)
    assert quarantined == want.bad_seen - len(data.too_large)
    assert nul_removed == want.nul_removed
    assert total == want.clicks
    assert cold_areas == dict(want.areas) == hot_areas
    return {"lines": len(data.lines), "records_sent": want.records, "clicks": want.clicks,
            "duplicates": want.duplicates, "bad_distinct": want.bad_distinct,
            "bad_seen": want.bad_seen, "too_large": len(data.too_large),
            "punctuation": data.punctuation, "nul_removed": want.nul_removed,
            "unmapped_areas": sorted(name for name in want.areas if name not in CANONICAL)}
