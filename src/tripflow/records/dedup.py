"""The dedup key: one algorithm everywhere (spec: "Identity: the dedup key")."""

from __future__ import annotations

import xxhash


def dedup_key(session_id: str, document_id: int, epoch_ms: int) -> str:
    """xxh64 of "SessionId|DocumentId|epoch_ms" as 16 lowercase hex chars."""
    return xxhash.xxh64_hexdigest(f"{session_id}|{document_id}|{epoch_ms}".encode())
