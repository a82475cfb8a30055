"""Test data for the hot path: generated TripClick days (duplicates, late and bad lines,
bots) plus hand-made bursts with a known anomaly shape, and helpers to send lines."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tripflow.records.generate import generate
from tripflow.records.parser import ParseResult, parse_batch

SESSION_CHARS = "abcdefghijklmnopqrstuvwxyz012345"


def ms_of(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def click_line(session: str, document: int, ms: int, areas: str = ",Oncology") -> bytes:
    return json.dumps({
        "DateCreated": f"/Date({ms})/", "SessionId": session, "DocumentId": document,
        "Url": f"http://example.org/{document}", "Title": f"Document {document}", "DOI": "",
        "ClinicalAreas": areas, "Keywords": "burst", "Documents": [],
    }).encode()


def burst(session: str, start: str, count: int, span_s: float,
          document: int = 900_001) -> list[bytes]:
    """`count` clicks of one session spread evenly over `span_s` seconds from `start`."""
    first = ms_of(start)
    step = span_s * 1000 / max(count - 1, 1)
    return [click_line(session, document + i % 7, first + round(i * step)) for i in range(count)]


def session_id(rng: random.Random) -> str:
    return "".join(rng.choice(SESSION_CHARS) for _ in range(24))


def anomaly_bursts(day: date, rng: random.Random) -> list[bytes]:
    """A burst straddling a 5-minute boundary (no tumbling 5-minute window holds 50 of its
    clicks, the sliding one does) and one that reaches CRITICAL (>= 100 in 5 minutes)."""
    d = day.isoformat()
    return (burst(session_id(rng), f"{d}T10:03:00", 70, 240)  # 10:03:00 → 10:07:00
            + burst(session_id(rng), f"{d}T15:31:00", 130, 180))  # 130 in 3 minutes


def dataset(folder: Path, *, start: date = date(2016, 3, 1), days: int = 1,
            sessions_per_day: int = 400, bots: int = 3, seed: int = 7) -> list[bytes]:
    """Generated lines (file order) with the anomaly bursts mixed in at random places."""
    generate(folder, start=start, days=days, seed=seed, sessions_per_day=sessions_per_day,
             dup_rate=0.02, late_rate=0.02, bad_rate=0.01, bots=bots)
    lines: list[bytes] = []
    for path in sorted(folder.glob("????-??-??.json")):
        lines += [line for line in path.read_bytes().split(b"\n") if line]
    rng = random.Random(seed)
    for line in anomaly_bursts(start, rng):
        lines.insert(rng.randrange(len(lines) + 1), line)
    return lines


def parsed(lines: list[bytes], partition: int = 0, first_offset: int = 0,
           topic: str = "t") -> ParseResult:
    """What the stream worker hands to the hot store for these records."""
    n = len(lines)
    context = pa.table({
        "topic": pa.array([topic] * n),
        "partition": pa.array([partition] * n, pa.int32()),
        "offset": pa.array(range(first_offset, first_offset + n), pa.int64()),
    })
    return parse_batch(lines, context=context, read_ms=int(time.time() * 1000))


def session_key(line: bytes) -> bytes | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    session = record.get("SessionId") if isinstance(record, dict) else None
    return session.encode() if isinstance(session, str) else None


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Replicated like tripflow's own topics (a 3-broker cluster asks 2 in-sync replicas).
    replicas = min(3, len(admin.list_topics(timeout=30).brokers))
    admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                  replication_factor=replicas)])[topic].result(timeout=30)


def produce(bootstrap: str, topic: str, lines: list[bytes], *, rate: float | None = None) -> None:
    """Send lines keyed by SessionId (as the producer does), optionally at `rate` per s."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    errors: list[object] = []
    started = time.monotonic()
    for i, line in enumerate(lines):
        producer.produce(topic, value=line, key=session_key(line),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
        if rate:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        else:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
