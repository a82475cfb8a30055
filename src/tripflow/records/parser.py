"""The one TripClick parser: raw record values in, silver click rows and quarantine out.

`parse_batch` is the single definition of a valid record (spec: "Fields of a record",
"Bad input"); the hot path and the batch path both call it on whole batches.

How it is fast: the values go to an in-process DuckDB as one Arrow column and a single
SQL statement validates each JSON text, reads it once (`from_json` into a struct),
extracts every field and decides `is_click` with one vectorised conjunction. Python
then does only what has no vectorised form, on as few rows as possible: the xxh64
dedup key (one C call per click through `map`), the clinical-area normalisation (once
per *distinct* `ClinicalAreas` string) and, for rejected rows only, the reason and its
wording (`_explain`, which walks the checks in `Reason`'s order).

Reading of the spec where it leaves room (see also `tests/records/test_parser.py`):
- Array-style lines: a leading byte-order mark, surrounding whitespace, a leading `[`
  before `{` and trailing `,`/`]` after the last `}` are stripped. A line that is a JSON
  array of anything but one object (`[1,2]`) is kept whole, so it is `not_object`, not
  `not_json`.
- The JSON reader is DuckDB's (yyjson): it also accepts trailing commas and NaN/Infinity;
  with a repeated key, the first occurrence counts. A null value (Kafka tombstone) or an
  empty line is `not_json`, with raw stored as b"".
- `SessionId` must be a JSON string that is not empty or whitespace only.
- `DocumentId` accepts a JSON integer, a number with an integral value (`5.0`) up to
  2**53, and a string of decimal digits (`"123"`); it must fit int64. Anything else
  (null, bool, `1.5`, `"x"`, an object) is `bad_document_id`.
- `DateCreated` digits that overflow int64 are `bad_date`.
- `Url`, `Title`, `DOI`, `Keywords`, `ClinicalAreas`: a string is kept as sent; any other
  JSON value is kept as its JSON text; missing or JSON null is null. `DOI` "" is null.
- `Documents`: the string form "id:score,id:score" (or "1,2,3") keeps the id of each
  piece, skipping empty pieces and pieces whose id is not an int64 integer, so "" is [];
  a list keeps its elements that are integers or strings of that same form ("7", "7:0.5")
  and drops the others (2.5, true, null). Missing, null or any other JSON type is null.
- `clinical_areas`/`unmapped_areas` are null when `ClinicalAreas` is missing or null,
  and [] when it is present but names nothing. `clinical_areas` holds every area, known
  names canonical and unknown ones title-cased; `unmapped_areas` is the subset of unknown
  ones, for the quality checks.
- U+0000 (which PostgreSQL text cannot hold) can only reach a valid record through the
  JSON escape `\\u0000` (a raw 0x00 byte makes the line `not_json`); it is removed from
  every string field, SessionId included before it is checked, and `nul_removed` counts
  the records that needed it. Quarantine details show it as the text `\\u0000`.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tripflow import duck
from tripflow.records import rules
from tripflow.records.areas import normalise_area_column
from tripflow.records.dedup import dedup_keys
from tripflow.records.schema import CLICK_SCHEMA, EVENT_TS, QUARANTINE_SCHEMA, Reason

ONE_DAY_MS, EARLIEST_EVENT_MS = rules.ONE_DAY_MS, rules.EARLIEST_EVENT_MS


class ParseResult(NamedTuple):
    """Every input row is in exactly one of the two tables, each in input order."""

    clicks: pa.Table  # CLICK_SCHEMA columns, then the context columns
    quarantine: pa.Table  # QUARANTINE_SCHEMA columns, then the context columns
    nul_removed: int = 0  # clicks that had U+0000 removed from a string field


RawValues = Sequence[bytes | None] | pa.Array | pa.ChunkedArray

_BATCH_TABLE = "tripflow_parse_batch"  # as named in _PARSE_SQL

# Macros the statement below uses; created once per connection.
_MACROS = r"""
-- Integer value of a JSON text, or NULL: an integer literal, an integral number
-- (5.0, 5e3; exact only up to 2**53), or a string of decimal digits ("123").
CREATE OR REPLACE TEMP MACRO json_integer(j) AS
    CASE
        WHEN regexp_full_match(j, '-?[0-9]+') THEN try_cast(j AS BIGINT)
        WHEN regexp_full_match(j, '"-?[0-9]+"') THEN try_cast(j ->> '$' AS BIGINT)
        WHEN regexp_full_match(j, '-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?')
             AND try_cast(j AS DOUBLE) = trunc(try_cast(j AS DOUBLE))
             AND abs(try_cast(j AS DOUBLE)) <= 9007199254740992
            THEN try_cast(j AS DOUBLE)::BIGINT
    END;
-- The ids of Documents pieces ("123", "123:0.25"): pieces without an int64 id are dropped.
CREATE OR REPLACE TEMP MACRO document_ids(pieces) AS
    list_filter(
        list_transform(pieces, lambda piece:
            CASE WHEN regexp_full_match(piece, '(?s)\s*-?[0-9]+\s*(:.*)?')
                 THEN try_cast(split_part(piece, ':', 1) AS BIGINT) END),
        lambda id: id IS NOT NULL);
"""

_SQL_PARAMETERS = {"earliest_event_ms": EARLIEST_EVENT_MS, "one_day_ms": ONE_DAY_MS}

# One row out per row in, in input order (projections only: no filter, join or sort).
# from_json reads each object once into a struct: VARCHAR fields come unescaped (any
# other JSON value as its text), JSON fields keep their JSON text for type checks.
_PARSE_SQL = r"""
WITH cleaned AS (
    -- Most values are exactly one object; only the others pay for the clean-up (DuckDB's
    -- trim() is slow): a byte-order mark, whitespace, a '[' before the object, ',' or ']'
    -- after it.
    SELECT bad_encoding, read_ms,
        CASE WHEN starts_with(text, '{') AND ends_with(text, '}') THEN text
             ELSE regexp_replace(regexp_replace(text, '^\x{FEFF}?\s*(\[\s*)?\{', '{'),
                                 '\}[\s,\]]*$', '}')
        END AS doc
    FROM tripflow_parse_batch
), fields AS (
    -- Each text is read once: an object's fields by from_json (NULL when not JSON);
    -- json_valid only for the texts that are not objects, to tell not_json from not_object.
    SELECT bad_encoding, read_ms, doc,
        CASE WHEN parsed IS NOT NULL THEN true WHEN json_valid(doc) THEN false END AS is_object,
        unnest(parsed)
    FROM (SELECT *, CASE WHEN starts_with(doc, '{') THEN try(from_json(doc, '{
            "DateCreated": "VARCHAR", "SessionId": "JSON", "DocumentId": "JSON",
            "Url": "VARCHAR", "Title": "VARCHAR", "DOI": "VARCHAR", "ClinicalAreas": "VARCHAR",
            "Keywords": "VARCHAR", "Documents": "JSON"}')) END AS parsed
          FROM cleaned)
), typed AS (
    SELECT *,
        regexp_extract(DateCreated, '@DATE_CREATED_VALUE@', 1) AS date_digits,
        try_cast(date_digits AS BIGINT) AS ms,
        -- U+0000 comes only as the escape \u0000 (a raw one is not JSON): look further
        -- only in records whose text holds that escape
        coalesce(contains(doc, '\u0000'), false) AS maybe_nul,
        CASE WHEN starts_with(SessionId, '"') THEN
            CASE WHEN maybe_nul THEN replace(SessionId ->> '$', chr(0), '')
                 ELSE SessionId ->> '$' END
        END AS session_id,
        json_integer(DocumentId) AS document_id
    FROM fields
), checked AS (
    SELECT *,
        coalesce(NOT bad_encoding AND is_object AND regexp_matches(session_id, '\S')
                 AND document_id IS NOT NULL AND ms >= $earliest_event_ms
                 AND ms - $one_day_ms <= read_ms, false) AS is_click
    FROM typed
)
SELECT
    is_click,
    ms,
    session_id,
    document_id,
    CASE WHEN maybe_nul THEN replace(Url, chr(0), '') ELSE Url END AS url,
    CASE WHEN maybe_nul THEN replace(Title, chr(0), '') ELSE Title END AS title,
    nullif(CASE WHEN maybe_nul THEN replace(DOI, chr(0), '') ELSE DOI END, '') AS doi,
    CASE WHEN maybe_nul THEN replace(Keywords, chr(0), '') ELSE Keywords END AS keywords,
    CASE WHEN maybe_nul THEN replace(ClinicalAreas, chr(0), '') ELSE ClinicalAreas END
        AS areas,
    -- a string field of this record held U+0000 (now removed)
    maybe_nul AND (contains(SessionId ->> '$', chr(0)) OR contains(Url, chr(0))
                   OR contains(Title, chr(0)) OR contains(DOI, chr(0))
                   OR contains(Keywords, chr(0)) OR contains(ClinicalAreas, chr(0)))
        IS TRUE AS had_nul,
    CASE
        WHEN Documents = '[]' THEN []::BIGINT[]
        -- fast path: a plain list of non-negative integers that all fit int64
        WHEN regexp_full_match(Documents, '\[\s*([0-9]{1,18}\s*(,\s*[0-9]{1,18}\s*)*)?\]')
            THEN from_json(Documents, '["BIGINT"]')
        WHEN starts_with(Documents, '[') THEN document_ids(from_json(Documents, '["VARCHAR"]'))
        WHEN starts_with(Documents, '"') THEN document_ids(string_split(Documents ->> '$', ','))
    END AS documents,
    -- what _explain needs to say why a row is not a click (NULL for clicks)
    CASE WHEN NOT is_click THEN {
        'is_object': is_object, 'doc_start': left(doc, 60), 'date_created': DateCreated,
        'date_digits': date_digits, 'ms': ms, 'session_json': SessionId,
        'session_id': session_id, 'document_json': DocumentId, 'document_id': document_id,
        'read_ms': read_ms} END AS evidence
FROM checked
"""
# DateCreated's form, from the rules (a literal in the statement: a constant pattern is
# compiled once).
_PARSE_SQL = _PARSE_SQL.replace("@DATE_CREATED_VALUE@", rules.DATE_CREATED_VALUE)


def _time_text(epoch_ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return f"{epoch_ms} ms"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What RE2's \S (used in the SQL) does not match: its \s is exactly these.
_NOT_SQL_SPACE = re.compile(r"[^\t\n\f\r ]")
_JSON_KIND = {"[": "an array", '"': "a string", "n": "null", "t": "a boolean", "f": "a boolean"}


def _explain(evidence: dict[str, Any], bad_encoding: bool) -> tuple[Reason, str]:
    """Why a row is not a click, in words free of U+0000 (PostgreSQL text cannot hold
    it): the raw bytes keep it, the detail shows it as the text `\\u0000`."""
    reason, detail = _first_failed_check(evidence, bad_encoding)
    return reason, detail.replace("\x00", "\\u0000")


def _first_failed_check(evidence: dict[str, Any], bad_encoding: bool) -> tuple[Reason, str]:
    """The first failed check in `Reason`'s order, in words.

    Mirrors the `is_click` conjunction of _PARSE_SQL; runs for rejected rows only.
    """
    doc, ms = evidence["doc_start"], evidence["ms"]
    if bad_encoding:
        return Reason.BAD_ENCODING, "bytes are not valid UTF-8"
    if evidence["is_object"] is None:
        if doc is None or not doc.strip():
            return Reason.NOT_JSON, "empty record"
        return Reason.NOT_JSON, f"not parseable JSON: {doc}"
    if not evidence["is_object"]:
        return Reason.NOT_OBJECT, f"JSON {_JSON_KIND.get(doc[0], 'a number')}, not an object"
    date_created = evidence["date_created"]
    if date_created is None:
        return Reason.BAD_DATE, "DateCreated missing or null"
    if not evidence["date_digits"]:
        return Reason.BAD_DATE, f"DateCreated not /Date(<digits>)/: {date_created[:60]}"
    if ms is None:
        return Reason.BAD_DATE, f"DateCreated beyond the int64 range: {date_created[:60]}"
    session_json, session_id = evidence["session_json"], evidence["session_id"]
    if session_json in (None, "null"):
        return Reason.NO_SESSION, "SessionId missing or null"
    if session_id is None:
        return Reason.NO_SESSION, f"SessionId not a string: {session_json[:60]}"
    if not _NOT_SQL_SPACE.search(session_id):
        return Reason.NO_SESSION, "SessionId empty"
    document_json = evidence["document_json"]
    if document_json in (None, "null"):
        return Reason.BAD_DOCUMENT_ID, "DocumentId missing or null"
    if evidence["document_id"] is None:
        return Reason.BAD_DOCUMENT_ID, f"DocumentId not an int64 integer: {document_json[:60]}"
    if ms < EARLIEST_EVENT_MS:
        return Reason.TOO_OLD, f"event time {_time_text(ms)} is before 2000-01-01"
    read_ms = evidence["read_ms"]
    if ms - ONE_DAY_MS > read_ms:
        return Reason.IN_FUTURE, (
            f"event time {_time_text(ms)} is more than a day after read time {_time_text(read_ms)}"
        )
    raise AssertionError(f"parser SQL rejected a row no check explains: {evidence}")


_local = threading.local()


def _duckdb_mallctl() -> Any:
    """jemalloc's mallctl inside DuckDB's Linux build, or None where it is not there."""
    try:
        import _duckdb  # the extension module duckdb is built on

        mallctl = ctypes.CDLL(_duckdb.__file__).duckdb_je_mallctl
    except (ImportError, OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    return mallctl


_MALLCTL = _duckdb_mallctl()


def release_memory() -> None:
    """Give the pages DuckDB's allocator holds free back to the OS now. It keeps them for
    about a second to reuse them, which for a worker parsing batch after batch means tens
    of MB resident for good; one purge per batch costs a few ms. A no-op elsewhere."""
    if _MALLCTL is not None:
        _MALLCTL(b"arena.4096.purge", None, None, None, 0)  # 4096: every arena


def _connection() -> duckdb.DuckDBPyConnection:
    """This thread's DuckDB connection (connections are not shared across threads;
    a forked child opens its own)."""
    connection = getattr(_local, "connection", None)
    if connection is None or _local.pid != os.getpid():
        # One thread: parallelism comes from running one parser per partition/date.
        connection = duck.connect(threads=1)
        connection.execute(_MACROS)  # temporary macros: this connection's own
        _local.connection, _local.pid = connection, os.getpid()
    return connection


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Arrow's full validation names the first bad row; this reads its message (pinned
# pyarrow). Should the wording ever change, the rows are checked one by one instead.
_BAD_UTF8_AT = re.compile(r"Invalid UTF8 sequence at string index (\d+)")


def _invalid_utf8_rows(raw: pa.Array, text_type: pa.DataType) -> np.ndarray:
    """Mask of the rows that are not valid UTF-8, in one pass over the data."""
    invalid = np.zeros(len(raw), dtype=bool)
    start = 0
    while start < len(raw):
        rest = raw.slice(start)
        try:
            rest.view(text_type).validate(full=True)
            break
        except pa.ArrowInvalid as error:
            found = _BAD_UTF8_AT.search(str(error))
            if found is None:
                invalid[start:] = [v is not None and not _is_utf8(v) for v in rest.to_pylist()]
                break
            start += int(found.group(1))
            invalid[start] = True
            start += 1
    return invalid


def _as_text(raw: pa.Array, text_type: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Raw values as Arrow strings (null where not UTF-8), and a mask of those rows."""
    try:
        return raw.cast(text_type), np.zeros(len(raw), dtype=bool)  # validates: usual case
    except pa.ArrowInvalid:
        invalid = _invalid_utf8_rows(raw, text_type)
    # Same offsets and bytes, with the invalid rows marked null (no copy of the data).
    keep = ~invalid if raw.null_count == 0 else ~invalid & raw.is_valid().to_numpy(False)
    validity = pa.array(np.concatenate([np.zeros(raw.offset, dtype=bool), keep])).buffers()[1]
    text = pa.Array.from_buffers(
        text_type, len(raw), [validity, *raw.buffers()[1:]], offset=raw.offset
    )
    return text, invalid


def _raw_and_text(values: RawValues) -> tuple[pa.ChunkedArray, pa.ChunkedArray, np.ndarray]:
    """(raw bytes as sent, null as b"", the values as text, mask of non-UTF-8 rows).

    Chunk by chunk: a column read from Parquet comes in many chunks, and gluing them
    into one array would copy every byte of every value once more."""
    if isinstance(values, pa.ChunkedArray):
        chunks = values.chunks or [pa.array([], values.type)]
    elif isinstance(values, pa.Array):
        chunks = [values]
    else:
        chunks = [pa.array(values, pa.binary())]
    raws, texts, masks = zip(*map(_chunk_raw_and_text, chunks), strict=True)
    return pa.chunked_array(raws), pa.chunked_array(texts), np.concatenate(masks)


def _chunk_raw_and_text(values: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    is_large = pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)
    binary_type = pa.large_binary() if is_large else pa.binary()
    text_type = pa.large_string() if is_large else pa.string()
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        # Arrow strings are UTF-8 already
        text, bad_encoding = values, np.zeros(len(values), dtype=bool)
        raw = values.cast(binary_type)
    else:
        raw = values.cast(binary_type)
        text, bad_encoding = _as_text(raw, text_type)
    if raw.null_count:  # a null value (Kafka tombstone) is stored as b""
        raw = pc.fill_null(raw, pa.scalar(b"", binary_type))
    return raw, text, bad_encoding


def _read_ms_column(read_ms: int | pa.Array | None, length: int) -> pa.Array:
    """read_ms as one int64 epoch-ms value per row; None (or a null row) means now."""
    now_ms = time.time_ns() // 1_000_000
    if read_ms is None:
        return pa.array(np.full(length, now_ms, dtype=np.int64))
    if isinstance(read_ms, int | np.integer):
        return pa.array(np.full(length, int(read_ms), dtype=np.int64))
    if isinstance(read_ms, pa.ChunkedArray):
        read_ms = read_ms.combine_chunks()
    if not isinstance(read_ms, pa.Array):
        read_ms = pa.array(read_ms)
    if len(read_ms) != length:
        raise ValueError(f"read_ms has {len(read_ms)} rows for {length} values")
    if pa.types.is_timestamp(read_ms.type):
        read_ms = read_ms.cast(pa.timestamp("ms", tz=read_ms.type.tz)).cast(pa.int64())
    return pc.fill_null(read_ms.cast(pa.int64()), now_ms)


def _check_context(context: pa.Table | None, length: int) -> None:
    if context is None:
        return
    if context.num_rows != length:
        raise ValueError(f"context has {context.num_rows} rows for {length} values")
    clashes = set(context.column_names) & (set(CLICK_SCHEMA.names) | set(QUARANTINE_SCHEMA.names))
    if clashes:
        raise ValueError(f"context columns clash with parser output: {sorted(clashes)}")


def _with_context(table: pa.Table, context: pa.Table | None, mask: pa.ChunkedArray) -> pa.Table:
    """`table` with the context rows selected by `mask` appended as columns."""
    if context is None:
        return table
    rows = context.filter(mask)
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        table = table.append_column(rows.schema.field(name), column)
    return table


def _keep_rows(table: pa.Table, keep: pa.ChunkedArray) -> pa.Table:
    """The rows of `table` where `keep` is true. Filtering copies every column; rejected
    rows are rare and clustered, so the runs between them are taken as zero-copy slices
    when there are few of them."""
    mask = keep.to_numpy(zero_copy_only=False)
    if mask.all():
        return table
    # starts and ends of the runs of kept rows
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    if len(edges) > 2 * _MAX_SLICES:
        return table.filter(keep)
    starts, ends = edges[0::2], edges[1::2]
    slices = [table.slice(start, end - start) for start, end in zip(starts, ends, strict=True)]
    return pa.concat_tables(slices) if slices else table.slice(0, 0)


# Above this many runs of kept rows, one filter is cheaper than many slices.
_MAX_SLICES = 256


def _clicks_table(valid: pa.Table) -> pa.Table:
    event_ms = valid["ms"].combine_chunks()
    keys = dedup_keys(valid["session_id"], valid["document_id"], event_ms)
    # Floor division keeps the UTC date right for every ms value.
    day_numbers = (event_ms.to_numpy(zero_copy_only=False) // ONE_DAY_MS).astype(np.int32)
    clinical_areas, unmapped_areas = normalise_area_column(valid["areas"])
    columns = {
        "dedup_key": keys,
        "event_ts": event_ms.cast(EVENT_TS),
        "event_date": pa.array(day_numbers, pa.date32()),
        "session_id": valid["session_id"],
        "document_id": valid["document_id"],
        "url": valid["url"],
        "title": valid["title"],
        "doi": valid["doi"],
        "keywords": valid["keywords"],
        "clinical_areas": clinical_areas,
        "unmapped_areas": unmapped_areas,
        "documents": valid["documents"].cast(CLICK_SCHEMA.field("documents").type),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in CLICK_SCHEMA.names], schema=CLICK_SCHEMA
    )


def parse_batch(
    values: RawValues,
    *,
    context: pa.Table | None = None,
    read_ms: int | pa.Array | None = None,
) -> ParseResult:
    """Parse raw TripClick record values into click rows and quarantined records.

    values: raw record values (Kafka values, file lines) as bytes, or an Arrow
        binary/string array; a trailing newline and array punctuation are tolerated.
    context: optional table with one row per value (e.g. topic/partition/offset);
        its columns are appended unchanged to both outputs.
    read_ms: when each value was read, epoch ms (scalar or one per value; None = now).
        An event more than a day after it is `in_future`.
    Bad data never raises; a `context`/`read_ms` of the wrong length does (ValueError).
    """
    raw, text, bad_encoding = _raw_and_text(values)
    length = len(raw)
    _check_context(context, length)
    batch = pa.table(
        {
            "text": text,
            "bad_encoding": bad_encoding,
            "read_ms": _read_ms_column(read_ms, length),
        }
    )
    connection = _connection()
    connection.register(_BATCH_TABLE, batch)
    try:
        parsed = connection.sql(_PARSE_SQL, params=_SQL_PARAMETERS).to_arrow_table()
    finally:
        connection.unregister(_BATCH_TABLE)
    if parsed.num_rows != length:  # one row out per row in is what the split relies on
        raise AssertionError(f"parser SQL returned {parsed.num_rows} rows for {length}")

    is_click = parsed["is_click"]
    is_bad = pc.invert(is_click)
    nul_removed = pc.sum(pc.and_(is_click, parsed["had_nul"])).as_py() or 0
    fields = parsed.drop_columns(["is_click", "evidence", "had_nul"])
    valid = _keep_rows(fields, is_click)
    explained = [
        _explain(evidence, bad)
        for evidence, bad in zip(
            parsed["evidence"].filter(is_bad).to_pylist(),
            bad_encoding[is_bad.to_numpy(zero_copy_only=False)],
            strict=True,
        )
    ]
    quarantine = pa.Table.from_arrays(
        [
            raw.filter(is_bad).cast(pa.binary()),
            pa.array([reason.value for reason, _detail in explained], pa.string()),
            pa.array([detail for _reason, detail in explained], pa.string()),
        ],
        schema=QUARANTINE_SCHEMA,
    )
    return ParseResult(
        _with_context(_clicks_table(valid), context, is_click),
        _with_context(quarantine, context, is_bad),
        nul_removed,
    )
