"""Arrow schemas of what the parser produces: silver click rows and quarantined records.

The parser (`tripflow.records.parser.parse_batch`) is the single definition of validity;
the hot path and the batch path both call it. Columns here follow
`spec/tripclick-format.md` ("Silver row") plus where each record came from.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa


class Reason(StrEnum):
    """Why a record was quarantined. The whole vocabulary, in one place."""

    BAD_ENCODING = "bad_encoding"  # bytes are not valid UTF-8
    NOT_JSON = "not_json"  # not parseable JSON (after stripping array punctuation)
    NOT_OBJECT = "not_object"  # JSON, but not an object
    BAD_DATE = "bad_date"  # DateCreated missing or not "/Date(<digits>)/"
    NO_SESSION = "no_session"  # SessionId missing, not a string, or empty
    BAD_DOCUMENT_ID = "bad_document_id"  # DocumentId missing or not an integer
    TOO_OLD = "too_old"  # event time before 2000-01-01
    IN_FUTURE = "in_future"  # event time more than one day after the record was read


EVENT_TS = pa.timestamp("ms", tz="UTC")

# One row per valid record (before dedup; silver keeps the first per dedup_key).
CLICK_SCHEMA = pa.schema(
    [
        pa.field("dedup_key", pa.string(), nullable=False),
        pa.field("event_ts", EVENT_TS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("document_id", pa.int64(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("title", pa.string()),
        pa.field("doi", pa.string()),  # null when empty
        pa.field("keywords", pa.string()),  # as sent
        # every area: canonical names, unknown ones title-cased; sorted, no repeats
        pa.field("clinical_areas", pa.list_(pa.string())),
        pa.field("unmapped_areas", pa.list_(pa.string())),  # those of them not canonical
        pa.field("documents", pa.list_(pa.int64())),  # null when absent
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)
