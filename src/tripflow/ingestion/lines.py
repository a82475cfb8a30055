"""What the producer needs to know about one raw log line, without judging it.

The producer sends every line as it is; it only reads the few fields it needs for the
Kafka key, the `dedup_key` header, the server assignment and the replay schedule. The
rules mirror `tripflow.records.parser` (the single definition of validity) so that a
line the producer schedules as a click is one the parser accepts, and its `dedup_key`
header is the key the parser computes (a test checks both on a generated dataset).
The reading is done here, per line with orjson, because the producer handles one line
at a time at ~10⁵ lines/s and needs the session of bad lines too, which the parser's
output does not carry; the rules it applies (DateCreated's form, the plausible event
times, the dedup key) are `tripflow.records.rules` and `tripflow.records.dedup`.
`identify_all` (bulk) has a shortcut for the usual line and falls back to `inspect_line`
(the general reading, also used by replays) for any other.

Known differences from the parser, only on lines that are bad or absurd anyway: with a
key repeated inside one object, the general reading takes the last occurrence (the
parser and the shortcut take the first); trailing commas, which the parser's JSON
reader tolerates, make a line unreadable here (so it has no key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import orjson
import simdjson
import xxhash
from orjson import JSONDecodeError
from orjson import loads as _loads

from tripflow.records.dedup import dedup_key, dedup_key_bytes
from tripflow.records.rules import (
    DATE_CREATED_KEY,
    DATE_CREATED_PREFIX,
    DATE_CREATED_SUFFIX,
    EARLIEST_EVENT_MS,
    FUTURE_TOLERANCE_MS,
)

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_EXACT_FLOAT_MAX = 2**53

_PREFIX, _SUFFIX = len(DATE_CREATED_PREFIX), len(DATE_CREATED_SUFFIX)
_WHITESPACE = b" \t\n\r"
_DIGITS = re.compile(r"-?[0-9]+")
_LEADING_BRACKET = re.compile(rb"^\[\s*\{")
_TRAILING_PUNCTUATION = re.compile(rb"\}[\s,\]]*$")


# What inspect_line returns: (session_id, dedup_key, event_ms, document_id), each None
# where unreadable. A plain tuple: this runs once per line, at ~10⁵ lines/s.
# session_id: the Kafka key, a non-blank JSON string; dedup_key and document_id: when
# SessionId, DocumentId and DateCreated are all readable; event_ms: DateCreated's
# milliseconds, when it is "/Date(<digits>)/".
LineInfo = tuple[str | None, str | None, int | None, int | None]

NOTHING: LineInfo = (None, None, None, None)


def _load(line: bytes) -> object:
    """The line's JSON value (array punctuation stripped as the parser does), or None."""
    if line[:1] == b"{" and line[-1:] == b"}":  # the usual line: nothing to strip
        try:
            return _loads(line)
        except JSONDecodeError:
            pass
    text = line.strip(_WHITESPACE)
    if text[:1] == b"[" or text[-1:] in (b",", b"]"):
        text = _TRAILING_PUNCTUATION.sub(b"}", _LEADING_BRACKET.sub(b"{", text, count=1))
    try:
        return _loads(text)
    except JSONDecodeError:
        pass
    # orjson refuses a few things the parser's reader accepts (NaN, big numbers, lone
    # surrogates): the standard library gives those lines a second chance.
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _integer(value: object) -> int | None:
    """DocumentId as the parser reads it: an int64, an integral number up to 2**53, or a
    string of decimal digits; anything else (bool, 1.5, "x", null) is no integer."""
    if type(value) is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) <= _EXACT_FLOAT_MAX else None
    if type(value) is str and _DIGITS.fullmatch(value):
        number = int(value)
        return number if _INT64_MIN <= number <= _INT64_MAX else None
    return None


def inspect_line(line: bytes) -> LineInfo:
    """Session, dedup key, event time and document of a raw line; never raises."""
    record = _load(line)
    if type(record) is not dict:
        return NOTHING
    session = record.get("SessionId")
    if type(session) is not str or not session.strip(" \t\n\r"):
        session = None
    elif not session.isascii():
        try:
            session.encode()
        except UnicodeEncodeError:  # a lone surrogate (\\ud800): not a usable key
            session = None
    date = record.get("DateCreated")
    event_ms = None
    if type(date) is str and date[:_PREFIX] == DATE_CREATED_PREFIX \
            and date[-_SUFFIX:] == DATE_CREATED_SUFFIX:
        digits = date[_PREFIX:-_SUFFIX]
        if digits.isascii() and digits.isdigit():  # isdigit alone takes "²" and "٣"
            event_ms = int(digits)
            if event_ms > _INT64_MAX:
                event_ms = None
    if session is None or event_ms is None:
        return session, None, event_ms, None
    document = _integer(record.get("DocumentId"))
    if document is None:
        return session, None, event_ms, None
    return session, dedup_key(session, document, event_ms), event_ms, document


# The usual line, as the Trip web servers (and the generator) write it: the three
# identity fields first, in this order and spelling, without escapes or leading zeros.
_USUAL_LINE = re.compile(
    rb'\{"DateCreated": "/Date\(([1-9][0-9]{0,17})\)/", "SessionId": "([a-z0-9]+)", '
    rb'"DocumentId": ([1-9][0-9]{0,17})[,}]'
)


Identity = tuple[bytes | None, bytes | None]  # (Kafka key, dedup key), as bytes


def identify_all(lines: Iterable[bytes]) -> list[Identity]:
    """(Kafka key, dedup key) of each line as bytes: what a bulk run needs, fast.

    Same answer as `inspect_line`, with a shortcut for the usual line: the identity
    fields are read from its first bytes, and simdjson only checks that the whole line
    is JSON (the parser quarantines one that is not). simdjson validates without
    building Python objects (≈ 0.8 µs for a 400-byte line; orjson.loads ≈ 1.9), and
    takes no line orjson refuses (UTF-8 checked, same nesting limit): a line it refuses
    (also a number beyond 64 bits, which orjson takes) goes the general way. A key
    repeated later in the line counts by its first occurrence here, as in the parser.
    """
    validate = simdjson.Parser().parse  # one per call: a parser is not shared by threads
    match = _USUAL_LINE.match
    found: list[Identity] = []
    for line in lines:
        usual = match(line)
        if usual is not None:
            try:
                validate(line)  # the document it returns is dropped at once
            except (ValueError, RuntimeError):  # not JSON (or too deep): the general way
                pass
            else:
                event_ms, session, document = usual.groups()
                found.append((session, dedup_key_bytes(session, document, event_ms)))
                continue
        session_id, key, _event_ms, _document = inspect_line(line)
        found.append((session_id.encode() if session_id is not None else None,
                      key.encode() if key is not None else None))
    return found


def identify(line: bytes) -> Identity:
    """`identify_all` of one line."""
    return identify_all((line,))[0]


def is_click(info: LineInfo, now_ms: int) -> bool:
    """True when the parser would accept the line as a click if read at `now_ms`:
    an identity, and an event time from 2000-01-01 to one day after `now_ms`."""
    _session, key, event_ms, _document = info
    return (
        key is not None
        and event_ms is not None
        and EARLIEST_EVENT_MS <= event_ms <= now_ms + FUTURE_TOLERANCE_MS
    )


def server_of(line: bytes, session_key: bytes | None, servers: int) -> int:
    """The simulated web server of a line: a stable hash of its SessionId (so a session
    stays on one server, as behind a sticky load balancer), or of the line itself."""
    if servers == 1:
        return 0
    return xxhash.xxh64_intdigest(session_key if session_key is not None else line) % servers


_DATE_CREATED_VALUE = re.compile(
    rb"(" + DATE_CREATED_KEY.encode() + rb')(\\?/Date\()([0-9]+)(\)\\?/")')


def rebased_line(line: bytes, original_ms: int, new_ms: int) -> bytes:
    """The line with DateCreated set to `new_ms` and the original time kept in a new
    field `OriginalDateCreated`; every other byte stays as it was.

    Falls back to re-serialising the record when the bytes are not in the usual shape
    (e.g. an escaped key), so a click is always rebased.
    """
    matches = _DATE_CREATED_VALUE.findall(line)
    end = line.rfind(b"}")
    if len(matches) == 1 and end > 0 and int(matches[0][2]) == original_ms:
        line = _DATE_CREATED_VALUE.sub(
            lambda m: m[1] + m[2] + str(new_ms).encode() + m[4], line, count=1
        )
        end = line.rfind(b"}")
        if b'"OriginalDateCreated"' in line:  # already rebased once: keep the first original
            return line
        return b"%s, \"OriginalDateCreated\": \"/Date(%d)/\"%s" % (line[:end], original_ms,
                                                                 line[end:])
    record = _load(line)
    assert isinstance(record, dict), "only clicks are rebased"
    record["DateCreated"] = f"/Date({new_ms})/"
    record.setdefault("OriginalDateCreated", f"/Date({original_ms})/")
    return orjson.dumps(record)
