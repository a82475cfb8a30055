"""Is the broker's log the one a sink's stored position refers to?

An embedded broker forgets everything on restart and hands out the same offsets again, for
other records. So where a sink stores the fingerprint of the record before its position,
the loop seeks one record earlier and compares the record it gets there:
- the same: the position is verified, that record (already stored) is dropped;
- another record: the log was replaced; the partition is read from the start of the new
  log (records fetched from the old position meanwhile are skipped);
- an earlier offset: the broker reset the position (out of range), so the log ends
  before the stored position: replaced, and reading goes on from where the broker put it;
- a later offset: the record is gone (retention); nothing to compare, reading goes on.
A record that does not come within `check_timeout_s`: the broker is asked where the log
ends; ending at or before it, the log was replaced. Checks run on assignment, after a
fenced write and after a broker outage (`ExactlyOnceConsumer`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition

from tripflow.messaging.sink import Stored, fingerprint

if TYPE_CHECKING:
    from tripflow.messaging.consumer import ExactlyOnceConsumer

log = logging.getLogger("tripflow.consumer")


@dataclass
class _Check:
    """A partition whose log must be shown to be the one the stored offset refers to."""

    offset: int  # the stored offset - 1: the last record already stored
    fingerprint: str
    since: float  # last asked (watermarks)
    first: float  # first asked


class LogVerifier:
    def __init__(self, loop: ExactlyOnceConsumer) -> None:
        self.loop = loop
        self.checks: dict[int, _Check] = {}
        self.skip_from: dict[int, int] = {}  # after a reset: drop stale records >= offset

    def active(self) -> bool:
        return bool(self.checks or self.skip_from)

    def drop(self, partition: int) -> None:
        self.checks.pop(partition, None)
        self.skip_from.pop(partition, None)

    def start(self, partition: int, stored: Stored, now: float) -> int:
        """Where to start reading a partition, checking its stored position if it can."""
        self.drop(partition)
        offset = stored.next_offset
        if offset is None:
            return OFFSET_BEGINNING
        if offset > 0 and stored.fingerprint:
            self.checks[partition] = _Check(offset - 1, stored.fingerprint, now, now)
            return offset - 1  # re-read the last stored record to verify it
        return offset

    def wanted(self, msg: Message, p: int) -> bool:
        """Whether a fetched record of a partition being checked or reset is processed."""
        skip = self.skip_from.get(p)
        if skip is not None:
            if msg.offset() >= skip:
                return False  # fetched before the seek to the start
            del self.skip_from[p]
        check = self.checks.get(p)
        return check is None or self._check(msg, check)

    def _check(self, msg: Message, check: _Check) -> bool:
        p, offset = msg.partition(), msg.offset()
        del self.checks[p]
        if offset == check.offset:
            if fingerprint(msg.timestamp()[1], msg.key(), msg.value()) == check.fingerprint:
                return False  # verified: it was stored already
            self._replaced(p, f"the record at offset {offset} is not the one "
                              f"{self.loop.sink.holder} holds there", offset)
            return False
        if offset < check.offset:
            # The broker reset the position (offset out of range): we are at its start.
            self.loop.log_replaced(p, f"the stored offset {check.offset + 1} is beyond the "
                                      f"log end (the broker reset the position to {offset})")
            return True
        log.warning("partition %d: the record at offset %d is gone (retention?); cannot "
                    "verify the log, continuing at %d", p, check.offset, offset)
        return True

    def _replaced(self, p: int, why: str, skip_from: int) -> None:
        self.loop.log_replaced(p, why)
        self.skip_from[p] = skip_from
        self.loop.seek(p, OFFSET_BEGINNING)

    def expire(self) -> None:
        """Records to verify that never came: ask where the log ends."""
        loop = self.loop
        limit = loop.options.check_limit_s
        now = time.monotonic()
        for p, check in list(self.checks.items()):
            if now - check.since < loop.options.check_timeout_s:
                continue
            if limit is not None and now - check.first >= limit:
                raise loop.options.error(
                    f"could not read back offset {check.offset} of partition {p} of topic "
                    f"{loop.topic!r} within {limit:.0f} s to check that its log is the one "
                    f"{loop.sink.holder} holds: is the broker healthy? Run again.")
            try:
                _low, high = loop.consumer.get_watermark_offsets(
                    TopicPartition(loop.topic, p), timeout=5, cached=False)
            except KafkaException as err:
                loop.warn_every(f"wm-{p}", 10.0, "partition %d: cannot read watermarks (%s)",
                                p, err.args[0].str())
                check.since = now
                continue
            if high <= check.offset:
                del self.checks[p]
                self._replaced(p, f"the stored offset {check.offset + 1} is beyond the log "
                                  f"end (about {high})", check.offset)
            else:
                check.since = now
                loop.warn_every(f"check-{p}", 10.0, "partition %d: waiting for the record at "
                                "offset %d (log end about %d)", p, check.offset, high)
