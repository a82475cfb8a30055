"""The dedup key: one algorithm everywhere (spec: "Identity: the dedup key").

xxh64 of "SessionId|DocumentId|epoch_ms" (decimal integers), as 16 lowercase hex chars.
Three forms of the one formula: per click (`dedup_key`), per raw line in the producer's
hot loop, on the fields' bytes as they are in the line (`dedup_key_bytes`), and per Arrow
column (`dedup_keys`, the parser's).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from xxhash import xxh64_hexdigest

SEPARATOR = "|"


def dedup_key(session_id: str, document_id: int, epoch_ms: int) -> str:
    """xxh64 of "SessionId|DocumentId|epoch_ms" as 16 lowercase hex chars."""
    return xxh64_hexdigest(f"{session_id}|{document_id}|{epoch_ms}".encode())


def dedup_key_bytes(session_id: bytes, document_id: bytes, epoch_ms: bytes) -> bytes:
    """`dedup_key` from the decimal digits as bytes (a raw line's own), as ASCII bytes."""
    return xxh64_hexdigest(b"%s|%s|%s" % (session_id, document_id, epoch_ms)).encode()


def dedup_keys(session_ids: pa.ChunkedArray | pa.Array, document_ids: pa.ChunkedArray | pa.Array,
               epoch_ms: pa.ChunkedArray | pa.Array) -> pa.Array:
    """`dedup_key` of every row of three columns (string, int64, int64), as strings: one
    C call per row."""
    key_inputs = pc.binary_join_element_wise(
        session_ids, document_ids.cast(pa.string()), epoch_ms.cast(pa.string()), SEPARATOR)
    return pa.array(list(map(xxh64_hexdigest, key_inputs.cast(pa.binary()).to_pylist())),
                    pa.string())
