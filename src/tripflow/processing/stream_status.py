"""The hot path's state for `tripflow status`: stored offsets against the broker's ends,
the event-time clock, freshness, the hot store's size and the totals (reads PostgreSQL and
the broker; starts nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tripflow import db
from tripflow.db import sqlfiles
from tripflow.messaging.config import consumer_config
from tripflow.processing.hotstore import DEFAULT_GROUP
from tripflow.processing.stream_sink import first_line
from tripflow.settings import Settings

_SQL = sqlfiles.statements("processing/sql", "hot_status.sql")


@dataclass
class PartitionStatus:
    partition: int
    stored: int | None  # next offset stored with the hot store (None: nothing yet)
    known_end: int | None  # the broker's high watermark: approximate (tansu reports less)
    updated_at: datetime | None

    @property
    def lag(self) -> int | None:
        if self.known_end is None:
            return None
        return max(self.known_end - (self.stored or 0), 0)


@dataclass
class HotStatus:
    group: str
    topic: str
    partitions: list[PartitionStatus]
    clock: datetime | None
    last_commit_at: datetime | None
    freshness_s: float | None  # now - last committed batch
    store_rows: int
    store_bytes: int
    store_days: int
    store_from: datetime | None
    totals: dict[str, int]  # records, clicks_new, duplicates, late_for_hot, quarantined,
    #                         batches, nul_removed
    broker_error: str | None = None


def hot_status(settings: Settings, *, group: str = DEFAULT_GROUP,
               timeout: float = 5.0) -> HotStatus:
    """What `tripflow status` shows about the hot path (reads PostgreSQL and the broker;
    starts nothing)."""
    state_sql, offsets_sql, store_sql = _SQL
    with db.connect(settings) as conn:
        row = conn.execute(state_sql).fetchone()
        assert row is not None
        stored = {p: (offset, updated) for p, offset, updated in conn.execute(
            offsets_sql, {"group": group, "topic": settings.topic})}
        rows, size, days = conn.execute(store_sql).fetchone()  # type: ignore[misc]
    ends: dict[int, int] = {}
    broker_error = None
    try:
        consumer = Consumer(consumer_config(settings, group, **{
            "client.id": "tripflow-status", "log_level": 0}))
        try:
            metadata = consumer.list_topics(settings.topic, timeout=timeout)
            topic = metadata.topics.get(settings.topic)
            if topic is None or topic.error is not None:
                broker_error = f"topic {settings.topic} not found"
            else:
                for p in sorted(topic.partitions):
                    ends[p] = consumer.get_watermark_offsets(
                        TopicPartition(settings.topic, p), timeout=timeout, cached=False)[1]
        finally:
            consumer.close()
    except (KafkaException, RuntimeError) as err:
        broker_error = first_line(err)
    partitions = [PartitionStatus(p, stored.get(p, (None, None))[0], ends.get(p),
                                  stored.get(p, (None, None))[1])
                  for p in sorted(set(stored) | set(ends))]
    clock, last_commit, freshness, store_from, *totals = row
    names = ("records", "clicks_new", "duplicates", "late_for_hot", "quarantined", "batches",
             "nul_removed")
    return HotStatus(group, settings.topic, partitions, clock, last_commit,
                     float(freshness) if freshness is not None else None, rows, size, days,
                     store_from, dict(zip(names, totals, strict=True)), broker_error)
