"""Lines a producer run cannot send: longer than the topic's message limit (spec "Hostile
bytes"). They are quarantined with the reason `too_large`, identified by file and line,
and the run goes on with the next line.

Stored in batches from the reading thread; the database is reached only when a run meets
such a line, so an ordinary produce never connects to PostgreSQL.
"""

from __future__ import annotations

import uuid

from tripflow.settings import Settings

TOO_LARGE = "too_large"
# Room for the key, the headers and librdkafka's own framing of a record.
HEADROOM = 1024
_FLUSH_EVERY = 64  # lines (each at most 64 KiB kept)


class UnsentLines:
    """Collects the too-large lines of one run and stores them in the quarantine."""

    def __init__(self, settings: Settings, limit: int) -> None:
        self.settings = settings
        self.limit = limit  # bytes a record (value + key + headers) may have
        self.run_id = uuid.uuid4().hex  # a resend of the same file is a new sighting
        self.count = 0
        self._pending: list = []

    def fits(self, value: bytes, key: bytes | None) -> bool:
        return len(value) + len(key or b"") + HEADROOM <= self.limit

    def add(self, file: str, line_number: int, value: bytes) -> None:
        from tripflow.processing.quarantine import UnsentLine

        self.count += 1
        self._pending.append(UnsentLine.of(
            file, line_number, value, TOO_LARGE,
            f"{len(value):,} bytes: over the topic's message limit of {self.limit:,} bytes"))
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Store what was collected (one transaction)."""
        if not self._pending:
            return
        from tripflow import db
        from tripflow.processing.quarantine import store_unsent

        with db.connect(self.settings) as conn:
            store_unsent(conn, self._pending, self.run_id)
        self._pending = []
