"""Lines with exactly one defect, one kind per quarantine reason.

Each bad line starts from a well-formed click record (with a session id no valid click
uses) and breaks one rule of spec/tripclick-format.md "Bad input", so that its reason is
the same whatever order a parser checks the rules in. Nothing here yields a line that
becomes valid after the parser strips array punctuation (`[`, `,`, `]`).
Invalid UTF-8 bytes are carried as lone surrogates (`surrogateescape`) until the file is
encoded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from tripflow.records.schema import Reason

# Event times of too_old and in_future lines: far enough out that they are in the past
# or the future whenever the record is read ("now" or a Kafka timestamp).
_YEAR_1999_MS = (
    int(datetime(1999, 1, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000) - 1,
)
_YEAR_2099_MS = (
    int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000) - 1,
)

# Byte sequences that are never valid UTF-8 in front of an ASCII or lead byte:
# a stray 0xFF, a Latin-1 "é", a cut two-byte and a cut three-byte sequence.
_INVALID_UTF8 = ("\udcff\udcfe", "\udce9", "\udcc3", "\udce2\udc80")


def _dumps(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False)


_MISSING = object()  # "drop this key" for `_replaced`


def _replaced(record: dict[str, object], key: str, value: object) -> dict[str, object]:
    """The record with `key` set to `value` (in place), or dropped when value is _MISSING."""
    if value is _MISSING:
        return {k: v for k, v in record.items() if k != key}
    return {k: (value if k == key else v) for k, v in record.items()}


def bad_line(reason: Reason, record: dict[str, object], rng: np.random.Generator) -> str:
    """A line that a reader must quarantine for `reason`, built from a valid `record`."""
    ms = int(str(record["DateCreated"])[6:-2])
    doc_id = record["DocumentId"]
    variant = int(rng.integers(0, 8))
    if reason is Reason.BAD_ENCODING:
        line = _dumps(record)
        at = line.index('"Title": "') + len('"Title": "')
        return line[:at] + _INVALID_UTF8[variant % len(_INVALID_UTF8)] + line[at:]
    if reason is Reason.NOT_JSON:
        line = _dumps(record)
        choices = (
            line[: int(rng.integers(len(line) // 4, len(line) - 2))],  # cut off mid-record
            str(record),  # Python repr: single quotes
            line + "}",  # trailing garbage
            line.replace('"SessionId"', "SessionId", 1),  # unquoted key
            f"GET /Search?criteria={record['Keywords'] or 'asthma'} HTTP/1.1 500",
        )
        return choices[variant % len(choices)]
    if reason is Reason.NOT_OBJECT:
        choices = (
            json.dumps(_dumps(record), ensure_ascii=False),  # the record encoded twice
            str(ms),
            "null",
            "true",
            json.dumps(str(record["Keywords"]) or "search", ensure_ascii=False),
        )
        return choices[variant % len(choices)]
    if reason is Reason.BAD_DATE:
        stamps: tuple[object, ...] = (
            _MISSING,
            datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            f"/Date({ms}+0000)/",  # .NET with an offset: not /Date(<digits>)/
            None,
            ms,  # a number, not a string
            "/Date()/",
            "",
            f"/Date(-{ms})/",
        )
        return _dumps(_replaced(record, "DateCreated", stamps[variant % len(stamps)]))
    if reason is Reason.NO_SESSION:
        sessions: tuple[object, ...] = (_MISSING, "", None, 123456789)
        return _dumps(_replaced(record, "SessionId", sessions[variant % len(sessions)]))
    if reason is Reason.BAD_DOCUMENT_ID:
        documents: tuple[object, ...] = (_MISSING, None, f"doc-{doc_id}", float(doc_id) + 0.5, "")
        return _dumps(_replaced(record, "DocumentId", documents[variant % len(documents)]))
    if reason is Reason.TOO_OLD:
        old_ms = int(rng.integers(_YEAR_1999_MS[0], _YEAR_1999_MS[1] + 1))
        return _dumps(_replaced(record, "DateCreated", f"/Date({old_ms})/"))
    if reason is Reason.IN_FUTURE:
        future_ms = int(rng.integers(_YEAR_2099_MS[0], _YEAR_2099_MS[1] + 1))
        return _dumps(_replaced(record, "DateCreated", f"/Date({future_ms})/"))
    raise ValueError(f"no bad line recipe for {reason!r}")
