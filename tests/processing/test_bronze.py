"""Bronze: the event_date extraction (unit) and the loader against the real broker."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from deltalake import DeltaTable

from tests.kits import batchkit
from tripflow import lake
from tripflow.messaging.config import consumer_config
from tripflow.messaging.sink import RECORD_SCHEMA, Batch, PartitionEnd
from tripflow.processing.bronze import (
    GROUP_ID,
    BronzeError,
    BronzeSink,
    event_dates,
    run_bronze,
)
from tripflow.services import broker
from tripflow.settings import Settings

DAY = dt.date(2016, 1, 1)
MS = batchkit.at(DAY, 0, 1, 41, 933)  # 1451606501933
READ_MS = batchkit.at(dt.date(2016, 1, 2), 12)


def dates_of(*values: bytes | None, read_ms: int = READ_MS) -> list[dt.date | None]:
    array = pa.array(list(values), pa.binary())
    return event_dates(array, pa.array(np.full(len(values), read_ms, np.int64))).to_pylist()


def test_event_date_of_plain_and_quirky_records() -> None:
    plain = batchkit.record(MS, "s" * 24, 1)
    escaped = plain.replace(b'"/Date(', b'"\\/Date(').replace(b')/"', b')\\/"')
    array_style = b"  [" + plain + b","
    key_later = b'{"SessionId": "abc", "DocumentId": 1, "DateCreated": "/Date(%d)/"}' % MS
    bad_utf8 = plain.replace(b'"Title": "t"', b'"Title": "\xff\xfe"')
    truncated = plain[:60]
    assert dates_of(plain, escaped, array_style, key_later, bad_utf8, truncated) == [DAY] * 6


def test_no_event_date_when_no_click_can_have_one() -> None:
    too_old = batchkit.record(batchkit.at(dt.date(1999, 5, 5), 1), "s" * 24, 1)
    future = batchkit.record(READ_MS + 2 * 86_400_000, "s" * 24, 1)
    tomorrow = batchkit.record(READ_MS + 86_400_000 - 1, "s" * 24, 1)  # within a day: fine
    bad_date = b'{"DateCreated": "/Date(abc)/", "SessionId": "a", "DocumentId": 1}'
    # A repeated key: the parser reads the first one, so no date either.
    repeated = b'{"DateCreated": "x", "DateCreated": "/Date(%d)/", "SessionId": "a", ' \
               b'"DocumentId": 1}' % MS
    not_object = b'"{\\"DateCreated\\": \\"/Date(%d)/\\"}"' % MS
    assert dates_of(too_old, future, tomorrow, bad_date, repeated, not_object, None, b"") == [
        None, None, dt.date(2016, 1, 3), None, None, None, None, None]


def test_event_dates_of_a_batch_in_chunks_are_those_of_its_rows() -> None:
    """A batch arrives as one chunk per fetch; the rows the fast path leaves are taken
    chunk by chunk, and each gets its own date."""
    plain = [batchkit.record(MS + i * 86_400_000, "s" * 24, i) for i in range(5)]
    key_later = b'{"SessionId": "abc", "DocumentId": 1, "DateCreated": "/Date(%d)/"}' % MS
    too_old = batchkit.record(batchkit.at(dt.date(1999, 5, 5), 1), "s" * 24, 1)
    chunks = [[plain[0], key_later], [], [plain[1]], [too_old, plain[2], None],
              [plain[3], key_later.replace(b"abc", b"def"), plain[4]]]
    values = pa.chunked_array([pa.array(c, pa.binary()) for c in chunks], pa.binary())
    read = pa.array(np.full(len(values), READ_MS + 5 * 86_400_000, np.int64))
    days = [DAY + dt.timedelta(days=i) for i in range(5)]
    assert event_dates(values, read).to_pylist() == [
        days[0], DAY, days[1], None, days[2], None, days[3], DAY, days[4]]


def positions(settings: Settings) -> dict[int, list[int]]:
    table = lake.open_table(settings, lake.BRONZE)
    assert table is not None
    rows = table.to_pyarrow_table(columns=["partition", "offset"])
    found: dict[int, list[int]] = {}
    for p, o in zip(rows.column("partition").to_pylist(), rows.column("offset").to_pylist(),
                    strict=True):
        found.setdefault(p, []).append(o)
    return {p: sorted(v) for p, v in found.items()}


def lines(n: int, start: int = 0) -> list[bytes]:
    return [batchkit.record(MS + i, f"session{i % 17:017d}", 1000 + i)
            for i in range(start, start + n)]


def assert_exactly(settings: Settings, sent: list[batchkit.Sent]) -> None:
    want: dict[int, list[int]] = {}
    for s in sent:
        want.setdefault(s.partition, []).append(s.offset)
    assert positions(settings) == {p: sorted(v) for p, v in want.items()}
    for offsets in positions(settings).values():
        assert offsets == list(range(len(offsets)))


def test_exactly_once_across_runs_and_a_growing_topic(settings: Settings) -> None:
    sent = batchkit.produce(settings, lines(300), partitions=3)
    first = run_bronze(settings, until_idle=1, partitions=(), max_batch_rows=64)
    assert (first.records, first.written, first.trimmed) == (300, 300, 0)
    assert first.batches >= 5
    sent += batchkit.produce(settings, lines(120, 300), create=False)
    second = run_bronze(settings, until_idle=1, partitions=())
    assert second.written == 120
    third = run_bronze(settings, until_idle=0.5, partitions=())
    assert third.written == 0
    assert_exactly(settings, sent)
    table = lake.open_table(settings, lake.BRONZE)
    for p in range(3):
        assert table.transaction_version(lake.bronze_app_id(settings.topic, p)) == max(
            s.offset for s in sent if s.partition == p)
    assert table.metadata().configuration == {"delta.checkpointInterval": "10"}


def record_rows(offsets: np.ndarray) -> pa.Table:
    """Fetched records of partition 0 at these offsets, as the consumer loop hands them."""
    values = [batchkit.record(MS + int(o), "x" * 24, int(o)) for o in offsets]
    return pa.Table.from_arrays(
        [pa.array(values, pa.binary()), pa.array(np.zeros(len(offsets), np.int32)),
         pa.array(offsets), pa.array(np.full(len(offsets), READ_MS, np.int64)),
         pa.array([None] * len(offsets), pa.binary())], schema=RECORD_SCHEMA)


def test_a_batch_overlapping_bronze_is_trimmed(settings: Settings) -> None:
    sent = batchkit.produce(settings, lines(40), partitions=1)
    run_bronze(settings, until_idle=0.5, partitions=())
    # A retried batch: offsets 30..49 of partition 0, of which 30..39 are written already.
    sink = BronzeSink(settings)
    sink.write(Batch(record_rows(np.arange(30, 50)), {0: PartitionEnd(50, "")}, {0: 40}))
    assert (sink.summary.trimmed, sink.summary.written) == (10, 10)
    assert positions(settings) == {0: list(range(50))}
    assert len(sent) == 40


def test_a_commit_conflicting_with_another_writer_is_redone(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    batchkit.produce(settings, lines(40), partitions=1)
    run_bronze(settings, until_idle=0.5, partitions=())  # offsets 0..39
    sink = BronzeSink(settings)
    # Between this sink's read of the versions and its commit, another loader commits
    # offsets 40..44 of the same partition, then the table's metadata changes (as when
    # two loaders create the table at once): the commit fails, and is redone.
    builds = []
    build = BronzeSink._table

    def another_writer_first(self: BronzeSink, rows: pa.Table) -> pa.Table:
        if self is sink:
            builds.append(rows.num_rows)
            if len(builds) == 1:
                BronzeSink(settings).write(Batch(record_rows(np.arange(40, 45)),
                                                 {0: PartitionEnd(45, "")}, {0: 40}))
                DeltaTable(lake.table_uri(settings, lake.BRONZE)).alter.set_table_properties(
                    {"delta.logRetentionDuration": "interval 31 days"})
        return build(self, rows)

    monkeypatch.setattr(BronzeSink, "_table", another_writer_first)
    sink.write(Batch(record_rows(np.arange(40, 60)), {0: PartitionEnd(60, "")}, {0: 40}))
    assert builds == [20, 15]  # redone on the table read again: 40..44 trimmed
    assert (sink.summary.trimmed, sink.summary.written, sink.summary.batches) == (5, 15, 1)
    assert sink.summary.gaps == []  # 40..44 were fetched (and written by the other)
    assert positions(settings) == {0: list(range(60))}


def test_resumes_from_delta_versions_not_kafka_offsets(settings: Settings) -> None:
    sent = batchkit.produce(settings, lines(90), partitions=3)
    run_bronze(settings, until_idle=1)  # the consumer group, as in production
    # Rewind the group's committed offsets: bronze must still not copy anything twice.
    rewind = Consumer(consumer_config(settings, GROUP_ID))
    rewind.commit(offsets=[TopicPartition(settings.topic, p, 0) for p in range(3)],
                  asynchronous=False)
    rewind.close()
    again = run_bronze(settings, until_idle=1)
    assert (again.records, again.written) == (0, 0)  # resumed after the Delta versions
    assert_exactly(settings, sent)
    # And the other way round: a new, empty bronze table is filled from the start,
    # whatever offsets the group committed.
    shutil.rmtree(lake.table_uri(settings, lake.BRONZE))
    refill = run_bronze(settings, until_idle=1)
    assert refill.written == 90
    assert_exactly(settings, sent)


def test_two_loaders_in_the_group_share_the_partitions(settings: Settings) -> None:
    sent = batchkit.produce(settings, lines(200), partitions=4)
    results = []

    def loader() -> None:
        results.append(run_bronze(settings, until_idle=4, max_batch_rows=20))

    threads = [threading.Thread(target=loader) for _ in range(2)]
    threads[0].start()
    time.sleep(1.0)  # the second joins while the first works: a rebalance
    threads[1].start()
    sent += batchkit.produce(settings, lines(200, 200), create=False)
    for t in threads:
        t.join(timeout=120)
    assert sum(r.written for r in results) == 400
    assert_exactly(settings, sent)


def test_a_missing_topic_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(BronzeError, match="does not exist"):
        run_bronze(settings, until_idle=0.5, partitions=())


def test_a_long_running_loader_waits_for_its_topic(settings: Settings,
                                                   tripflow_env: dict[str, str]) -> None:
    """`tripflow bronze` (no --until-idle) started before its producer: it waits for the
    topic instead of exiting, then copies every record exactly once (and stops on SIGTERM)."""
    loader = subprocess.Popen([sys.executable, "-m", "tripflow", "bronze", "--partitions", "all"],
                              env=tripflow_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        time.sleep(4)  # the loader has looked for the topic and found none
        assert loader.poll() is None, loader.communicate()[0]
        sent = batchkit.produce(settings, lines(90), partitions=3)
        deadline = time.monotonic() + 90
        while lake.open_table(settings, lake.BRONZE) is None or \
                sum(map(len, positions(settings).values())) < 90:
            assert loader.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        loader.terminate()
        output = loader.communicate(timeout=60)[0].decode()
    assert loader.returncode == 0, output
    assert_exactly(settings, sent)


@pytest.fixture
def own_broker() -> Iterator[broker.BrokerPaths]:
    """A broker of this test's own, to restart (the embedded broker forgets its log)."""
    home = Path(tempfile.mkdtemp(prefix="tripflow-bronze-"))
    paths = broker.BrokerPaths(home)
    broker.start(paths)
    yield paths
    broker.stop(paths)
    shutil.rmtree(home, ignore_errors=True)


def bronze_values(settings: Settings) -> list[bytes]:
    table = lake.open_table(settings, lake.BRONZE)
    assert table is not None
    return sorted(table.to_pyarrow_table(columns=["value"]).column("value").to_pylist())


def test_a_replaced_log_is_copied_from_its_start(settings: Settings,
                                                 own_broker: broker.BrokerPaths) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap(own_broker)})
    old = lines(300)
    sent = batchkit.produce(settings, old, partitions=3)
    last = {p: max(s.offset for s in sent if s.partition == p) for p in range(3)}
    assert run_bronze(settings, until_idle=1, partitions=()).written == 300

    # Restarted: the same offsets again, for other records, and more of them (so the
    # record at each partition's last written offset exists, and differs).
    broker.stop(own_broker)
    broker.start(own_broker)
    longer = lines(450, 1000)
    batchkit.produce(settings, longer, partitions=3)
    again = run_bronze(settings, until_idle=1, partitions=())
    assert (again.written, again.trimmed) == (450, 0)
    assert sorted(again.replaced) == [
        f"partition {p}: the record at offset {last[p]} is not the one bronze holds there"
        for p in range(3)]
    assert bronze_values(settings) == sorted(old + longer)
    assert run_bronze(settings, until_idle=0.5, partitions=()).replaced == []  # now known

    # Restarted again, with fewer records: the log ends before the last written offsets.
    broker.stop(own_broker)
    broker.start(own_broker)
    shorter = lines(30, 5000)
    batchkit.produce(settings, shorter, partitions=3)
    third = run_bronze(settings, until_idle=1, partitions=())
    assert (third.written, third.trimmed, len(third.replaced)) == (30, 0, 3)
    assert all("before offset" in why or "beyond the log end" in why for why in third.replaced)
    assert bronze_values(settings) == sorted(old + longer + shorter)

