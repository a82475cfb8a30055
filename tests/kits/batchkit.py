"""Test kit for the batch path: produce lines to a topic, and compute — independently of
tripflow's parser and SQL — what bronze, silver and every cold mart must hold.

The expectations are plain Python over the lines (`json`, the spec's rules, dicts and
sets), so a bug in the project's parser or mart SQL cannot hide in them. Imported by the
batch path's tests as `tests.kits.batchkit`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.spec_records import spec_record
from tripflow.messaging.config import producer_config
from tripflow.settings import Settings

DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")
ONE_DAY_MS = 86_400_000



# -- files and producing ---------------------------------------------------------------------
def day_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if DAY_FILE.match(p.name))


def file_lines(paths: Iterable[Path]) -> list[bytes]:
    """Every non-empty line of the files, in order, as the bytes a producer sends."""
    lines: list[bytes] = []
    for path in paths:
        for line in path.read_bytes().split(b"\n"):
            line = line.removesuffix(b"\r")
            if line.strip():
                lines.append(line)
    return lines


def session_key(line: bytes) -> bytes | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and isinstance(record.get("SessionId"), str):
        return record["SessionId"].encode()
    return None


def create_topic(settings: Settings, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": producer_config(settings)["bootstrap.servers"]})
    # Replicated like tripflow's own topics (a 3-broker cluster asks 2 in-sync replicas).
    replicas = min(3, len(admin.list_topics(timeout=30).brokers))
    admin.create_topics([NewTopic(settings.topic, num_partitions=partitions,
                                  replication_factor=replicas)])[settings.topic].result(timeout=30)


@dataclass(frozen=True)
class Sent:
    """One produced record and where the broker put it."""

    line: bytes
    partition: int
    offset: int
    timestamp_ms: int


def produce(settings: Settings, lines: list[bytes], partitions: int = 3,
            create: bool = True, producer: Producer | None = None) -> list[Sent]:
    """Publish lines (key = SessionId, as the producer does); returns their positions."""
    if create:
        create_topic(settings, partitions)
    producer = producer or Producer(producer_config(settings, **{"linger.ms": 5}))
    placed: dict[int, tuple[int, int, int]] = {}
    errors: list[object] = []

    def delivered(index: int, err: object, msg: object) -> None:
        if err:
            errors.append(err)
        else:
            placed[index] = (msg.partition(), msg.offset(), msg.timestamp()[1])  # type: ignore[attr-defined]

    for index, line in enumerate(lines):
        while True:
            try:
                producer.produce(settings.topic, value=line, key=session_key(line),
                                 on_delivery=functools.partial(delivered, index))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert errors == []
    return [Sent(line, *placed[i]) for i, line in enumerate(lines)]


# -- the independent reading of a record ---------------------------------------------------------
@dataclass(frozen=True)
class Click:
    session_id: str
    document_id: int
    ms: int
    title: str | None
    areas: frozenset[str]
    partition: int
    offset: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.session_id, self.document_id, self.ms)

    @property
    def date(self) -> dt.date:
        return (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=self.ms)).date()

    @property
    def hour(self) -> int:
        return (self.ms % ONE_DAY_MS) // 3_600_000

    @property
    def minute(self) -> dt.datetime:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            milliseconds=self.ms - self.ms % 60_000)


def read_click(sent: Sent) -> Click | None:
    """The click a record holds, or None when the spec says quarantine it."""
    record = spec_record(sent.line, sent.timestamp_ms)
    if record is None:
        return None
    return Click(record.session, record.document, record.ms, record.title, record.areas,
                 sent.partition, sent.offset)


# -- what silver and the marts must hold ------------------------------------------------------
@dataclass
class Truth:
    clicks: list[Click]  # distinct clicks (first copy by partition, offset)
    duplicates: int
    bad: int

    @property
    def dates(self) -> list[dt.date]:
        return sorted({c.date for c in self.clicks})


def truth(sent: list[Sent]) -> Truth:
    first: dict[tuple[str, int, int], Click] = {}
    bad = duplicates = 0
    for record in sorted(sent, key=lambda s: (s.partition, s.offset)):
        click = read_click(record)
        if click is None:
            bad += 1
        elif click.key in first:
            duplicates += 1
        else:
            first[click.key] = click
    return Truth(list(first.values()), duplicates, bad)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def expected_marts(clicks: list[Click], articles: dict[int, str | None] | None = None
                   ) -> dict[str, set[tuple]]:
    """Every cold mart (and the reconciled traffic minutes) as a set of row tuples, in the
    column order of spec/marts.md."""
    by_session: dict[tuple[str, dt.date], list[Click]] = defaultdict(list)
    by_date: dict[dt.date, list[Click]] = defaultdict(list)
    by_doc: dict[tuple[dt.date, int], list[Click]] = defaultdict(list)
    by_area: dict[tuple[dt.date, str], list[Click]] = defaultdict(list)
    by_hour: dict[tuple[dt.date, int], list[Click]] = defaultdict(list)
    by_minute: dict[dt.datetime, list[Click]] = defaultdict(list)
    for c in clicks:
        by_session[(c.session_id, c.date)].append(c)
        by_date[c.date].append(c)
        by_doc[(c.date, c.document_id)].append(c)
        by_hour[(c.date, c.hour)].append(c)
        by_minute[c.minute].append(c)
        for area in c.areas:
            by_area[(c.date, area)].append(c)

    sessions = set()
    for (sid, day), group in by_session.items():
        first, last = min(c.ms for c in group), max(c.ms for c in group)
        sessions.add((sid, day, len(group), len({c.document_id for c in group}),
                      _utc(first), _utc(last), (last - first) // 1000))
    daily = set()
    for day, group in by_date.items():
        per_hour = defaultdict(int)
        for c in group:
            per_hour[c.hour] += 1
        best = max(per_hour.values())
        peak = min(h for h, n in per_hour.items() if n == best)
        daily.add((day, len(group), len({c.session_id for c in group}),
                   len({c.document_id for c in group}), peak))
    areas = {(day, area, len(group), len({c.session_id for c in group}))
             for (day, area), group in by_area.items()}
    popular = set()
    for (day, doc), group in by_doc.items():
        title = None
        if articles and (articles.get(doc) or "").strip(" "):
            title = articles[doc]
        else:
            titled = [c for c in group if c.title is not None and c.title.strip(" ")]
            if titled:
                title = max(titled, key=lambda c: (c.ms, c.partition, c.offset)).title
        popular.add((day, doc, title, len(group), len({c.session_id for c in group})))
    hourly = {(day, hour, len(group), len({c.session_id for c in group}))
              for (day, hour), group in by_hour.items()}
    minutes = {(minute, len(group), len({c.session_id for c in group}),
                len({c.document_id for c in group}))
               for minute, group in by_minute.items()}
    return {
        "mart_session_analysis": sessions,
        "mart_daily_traffic": daily,
        "mart_clinical_areas": areas,
        "mart_popular_documents": popular,
        "mart_hourly_traffic": hourly,
        "traffic_minute": minutes,
    }


MART_COLUMNS = {
    "mart_session_analysis": "session_id, event_date, click_count, unique_docs, "
                             "first_click_ts, last_click_ts, session_duration_sec",
    "mart_daily_traffic": "event_date, total_events, unique_sessions, unique_documents, "
                          "peak_hour",
    "mart_clinical_areas": "event_date, clinical_area, search_count, unique_sessions",
    "mart_popular_documents": "event_date, document_id, title, view_count, unique_sessions",
    "mart_hourly_traffic": "event_date, event_hour, clicks, unique_sessions",
    "traffic_minute": "event_minute, total_clicks, unique_sessions, unique_docs",
}


def pg_mart_rows(conn, mart: str) -> set[tuple]:  # type: ignore[no-untyped-def]
    table = "mart_realtime_traffic_minute" if mart == "traffic_minute" else mart
    return set(conn.execute(f"select {MART_COLUMNS[mart]} from {table}").fetchall())


# -- handcrafted lines that the generator may not produce ---------------------------------------
def _line(ms: int, session: str, document: int, title: str = "t", areas: str = "") -> bytes:
    return json.dumps({
        "DateCreated": f"/Date({ms})/", "SessionId": session, "DocumentId": document,
        "Url": f"http://example.org/{document}", "Title": title, "DOI": "",
        "ClinicalAreas": areas, "Keywords": "k", "Documents": [],
    }).encode()


def _ms(day: dt.date, hour: int, minute: int = 0, second: int = 0, milli: int = 0) -> int:
    moment = dt.datetime(day.year, day.month, day.day, hour, minute, second, milli * 1000,
                         tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


UNKNOWN_DOC = 990_000_001  # never in a generated allarticles.txt


def edge_lines(day: dt.date) -> list[bytes]:
    """Clicks on `day` and the next date covering the marts' edge cases: a peak-hour tie
    (earliest wins), a session crossing midnight, messy repeated areas, a document whose
    title changes during the day (latest non-blank wins), a same-millisecond title tie
    (later Kafka position wins; same session so same partition), floor of durations, a
    resent duplicate and an array-style line."""
    nxt = day + dt.timedelta(days=1)
    lines = [
        # peak-hour tie on `nxt`: 3 clicks at 05h and 3 at 09h, nothing else that day
        *(_line(_ms(nxt, 5, i), f"tie{i:021d}", 800 + i) for i in range(3)),
        *(_line(_ms(nxt, 9, i), f"tie{i + 3:021d}", 810 + i) for i in range(3)),
        # a session crossing midnight into `nxt` (hour 23 of `day`: not a `nxt` peak)
        _line(_ms(day, 23, 59, 30, 250), "midnight0000000000000000", 820,
              areas=",Oncology,oncology, Surgery ,,obgyn,OB-Gyn,tropical_medicine"),
        _line(_ms(day, 23, 59, 59, 999), "midnight0000000000000000", 821,
              areas="Pediatrics,neurology,Neurology"),
        _line(_ms(nxt, 0, 0, 1, 1), "midnight0000000000000000", 820, areas=",Oncology"),
        # title changes of one (uncatalogued) document during `day`
        _line(_ms(day, 10), "titles000000000000000000", UNKNOWN_DOC, title="First title"),
        _line(_ms(day, 11), "titles000000000000000001", UNKNOWN_DOC, title="Second title"),
        _line(_ms(day, 12), "titles000000000000000002", UNKNOWN_DOC, title="   "),
        _line(_ms(day, 12, 30), "titles000000000000000003", UNKNOWN_DOC + 1, title=""),
        # same millisecond, same session, same document twice? no: different documents
        # share the ms; the title tie is between two clicks of one document at one ms
        _line(_ms(day, 13, 0, 0, 5), "sametime0000000000000000", UNKNOWN_DOC + 2, title="A"),
        _line(_ms(day, 13, 0, 0, 5), "sametime0000000000000001", UNKNOWN_DOC + 2, title="B"),
    ]
    lines.append(lines[-1])  # a resend: a duplicate
    lines.append(b"[" + _line(_ms(day, 14), "arraystyle00000000000000", 830) + b",")
    return lines


def wait_for(predicate, timeout: float = 30.0, step: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


# -- bronze without a broker (for silver and mart tests) -----------------------------------------
def bronze_table(lines: list[bytes], *, partitions: int = 2, topic: str = "t",
                 read_ms: int | None = None, first_offsets: list[int] | None = None):  # type: ignore[no-untyped-def]
    """Bronze rows for lines, as the loader builds them (round-robin partitions, offsets
    from `first_offsets`), without Kafka. Returns (table, positions)."""
    import numpy as np
    import pyarrow as pa

    from tripflow.processing.bronze import BRONZE_SCHEMA, event_dates

    read_ms = read_ms if read_ms is not None else int(time.time() * 1000)
    next_offset = list(first_offsets or [0] * partitions)
    sent = []
    for i, line in enumerate(lines):
        p = i % partitions
        sent.append(Sent(line, p, next_offset[p], read_ms))
        next_offset[p] += 1
    values = pa.array([s.line for s in sent], pa.binary())
    stamps = pa.array(np.full(len(sent), read_ms, dtype=np.int64))
    table = pa.Table.from_arrays([
        pa.array([topic] * len(sent), pa.string()),
        pa.array([s.partition for s in sent], pa.int32()),
        pa.array([s.offset for s in sent], pa.int64()),
        stamps.cast(pa.timestamp("ms", tz="UTC")),
        pa.array([session_key(s.line) for s in sent], pa.binary()),
        values,
        pa.array([dt.datetime.now(dt.UTC)] * len(sent), pa.timestamp("us", tz="UTC")),
        event_dates(values, stamps),
    ], schema=BRONZE_SCHEMA)
    return table, sent


def write_bronze(settings: Settings, lines: list[bytes], *, partitions: int = 2,
                 read_ms: int | None = None, first_offsets: list[int] | None = None
                 ) -> list[Sent]:
    """Append lines to the lake's bronze table as the loader would, offsets continuing
    what bronze holds (or from `first_offsets`: a replaced log), without Kafka. Returns
    their positions."""
    from deltalake import write_deltalake

    from tripflow import lake

    table = lake.open_table(settings, lake.BRONZE)
    first = list(first_offsets) if first_offsets is not None else [0] * partitions
    if table is not None and first_offsets is None:
        held = table.to_pyarrow_table(columns=["partition", "offset"])
        for p, o in zip(held.column("partition").to_pylist(), held.column("offset").to_pylist(),
                        strict=True):
            first[p] = max(first[p], o + 1)
    batch, sent = bronze_table(lines, partitions=partitions, topic=settings.topic,
                               read_ms=read_ms, first_offsets=first)
    write_deltalake(lake.table_uri(settings, lake.BRONZE), batch, mode="append",
                    partition_by=["event_date"])
    return sent


def record(ms: int, session: str, document: int, title: str = "t", areas: str = "") -> bytes:
    """A valid TripClick line."""
    return _line(ms, session, document, title, areas)


def at(day: dt.date, hour: int, minute: int = 0, second: int = 0, milli: int = 0) -> int:
    """Epoch ms of a UTC moment."""
    return _ms(day, hour, minute, second, milli)
