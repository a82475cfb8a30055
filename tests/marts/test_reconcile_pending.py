"""Reconciliation against a lagging batch side (issue 14, case 6; spec/marts.md,
"Reconciliation"): with the hot path caught up and bronze behind it, `marts` leaves every
hot minute as it is and reports the dates as pending; once silver holds what the hot path
counted, a later run reconciles them exactly and clears them. Real broker, real database,
the real stream worker, bronze, silver and marts."""

from __future__ import annotations

import datetime as dt
import functools

import psycopg
from confluent_kafka import Producer

from tests.kits import batchkit
from tripflow.marts import run_marts
from tripflow.messaging.config import producer_config
from tripflow.processing.bronze import run_bronze
from tripflow.processing.silver import run_silver
from tripflow.processing.stream import StreamOptions, run_stream
from tripflow.settings import Settings

D1, D2 = dt.date(2016, 3, 1), dt.date(2016, 3, 2)
D0 = D2 - dt.timedelta(days=3)  # late for the hot path once its clock is on D2
MINUTES = ("select event_minute, total_clicks, unique_sessions, unique_docs, updated_at "
           "from mart_realtime_traffic_minute order by 1")


def clicks(day: dt.date, n: int, prefix: str) -> list[bytes]:
    """n valid clicks spread over `day`, by 41 sessions (so over every partition)."""
    return [batchkit.record(batchkit.at(day, (i * 7) % 24, (i * 13) % 60, i % 60),
                            f"{prefix}{i % 41:021d}", 500 + i % 17, areas=",Cardiology")
            for i in range(n)]


def produce_to(settings: Settings, lines: list[bytes], partition: int) -> list[batchkit.Sent]:
    """Publish lines to one partition of the (existing) topic; their positions."""
    producer = Producer(producer_config(settings, **{"linger.ms": 5}))
    placed: dict[int, tuple[int, int, int]] = {}

    def delivered(index: int, err: object, msg: object) -> None:
        assert err is None, err
        placed[index] = (msg.partition(), msg.offset(), msg.timestamp()[1])  # type: ignore[attr-defined]

    for index, line in enumerate(lines):
        producer.produce(settings.topic, value=line, key=batchkit.session_key(line),
                         partition=partition, on_delivery=functools.partial(delivered, index))
    assert producer.flush(60) == 0
    return [batchkit.Sent(line, *placed[i]) for i, line in enumerate(lines)]


def stream(settings: Settings) -> None:
    run_stream(settings, until_idle=2, options=StreamOptions(partitions=()))


def load_bronze(settings: Settings, partitions: tuple[int, ...]) -> None:
    """Bronze for these partitions (() = all), to idle: a partition's first records may
    take over a second to arrive after the assignment."""
    assert run_bronze(settings, until_idle=3, partitions=partitions).written > 0


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.pg_dsn, autocommit=True)  # type: ignore[arg-type]


def minute_rows(settings: Settings) -> list[tuple]:
    with connect(settings) as conn:
        return conn.execute(MINUTES).fetchall()


def pending(settings: Settings) -> list[dt.date]:
    with connect(settings) as conn:
        return [d for (d,) in conn.execute(
            "select event_date from tripflow.reconciliation_pending order by 1")]


def test_a_lagging_bronze_never_lowers_a_hot_minute_and_later_runs_reconcile(
        settings: Settings, tripflow_env: dict[str, str], tripflow_cli) -> None:
    # The hot path is caught up on a three-partition topic ...
    sent = batchkit.produce(settings, clicks(D1, 150, "a") + clicks(D2, 150, "b")
                            + [b'{"DateCreated": "not a date"}'], partitions=3)
    assert {s.partition for s in sent} == {0, 1, 2}
    stream(settings)
    # ... also past a click it finds too late (older than its clock - 48 h): left to the
    # batch path. Sent to partition 0, so bronze's first load below already holds it.
    sent += produce_to(settings, clicks(D0, 1, "late"), partition=0)
    stream(settings)
    hot = minute_rows(settings)
    want = batchkit.expected_marts(batchkit.truth(sent).clicks)["traffic_minute"]
    assert hot and {r[:4] for r in hot} == {m for m in want if m[0].date() != D0}
    with connect(settings) as conn:
        (store_from,) = conn.execute("select store_from from tripflow.hot_state").fetchone()
    # D0 is older than the hot store (checked by offsets), D1 and D2 are in it (by clicks).
    assert store_from is not None and D0 < store_from.date() <= D1

    # Bronze has loaded one partition of three: silver and marts follow it.
    load_bronze(settings, (0,))
    assert run_silver(settings).dates == [D0, D1, D2]
    summary = run_marts(settings)
    assert summary.dates == [D0, D1, D2]
    assert minute_rows(settings) == hot  # every hot minute as it was, updated_at included
    rec = summary.reconciliation
    assert rec is not None and rec.dates == [] and rec.pending == [D0, D1, D2]
    assert set(rec.bronze_behind) == {1, 2} and rec.missing_clicks > 0
    line = summary.line()
    assert ("reconciliation pending for 3 dates (2016-02-28, 2016-03-01, 2016-03-02): "
            "bronze behind the hot path in partitions 1, 2") in line, line
    assert pending(settings) == [D0, D1, D2]
    with connect(settings) as conn:
        assert conn.execute("select count(*) from tripflow.reconciliation").fetchone() == (0,)
    shown = tripflow_cli("status", env=tripflow_env, timeout=120).stdout
    assert "reconciliation pending for 3 dates (2016-02-28, 2016-03-01, 2016-03-02)" in shown
    assert "bronze behind the hot path in partitions 1, 2" in shown

    # A run with nothing new defers again, still touching nothing.
    again = run_marts(settings)
    assert again.dates == [] and again.reconciliation is not None
    assert again.reconciliation.pending == [D0, D1, D2]
    assert minute_rows(settings) == hot

    # Bronze catches up: silver changes D1 and D2 only (D0's click was in partition 0),
    # and marts --changed reconciles those and the pending D0 too.
    load_bronze(settings, ())
    assert run_silver(settings).dates == [D1, D2]
    summary = run_marts(settings)
    assert summary.dates == [D1, D2]
    rec = summary.reconciliation
    assert rec is not None and rec.dates == [D0, D1, D2] and rec.pending == []
    assert "pending" not in summary.line()
    assert {r[:4] for r in minute_rows(settings)} == want  # exact, the late click included
    assert pending(settings) == []
    with connect(settings) as conn:
        assert conn.execute("select array_agg(distinct event_date order by event_date) "
                            "from tripflow.reconciliation").fetchone() == ([D0, D1, D2],)
    shown = tripflow_cli("status", env=tripflow_env, timeout=120).stdout
    assert "reconciliation pending" not in shown
    assert "last reconciliation of mart_realtime_traffic_minute: 3 dates" in shown


def test_pending_is_per_date_and_a_dates_run_reconciles_other_pending_dates(
        settings: Settings) -> None:
    batchkit.create_topic(settings, 2)
    # Partition 0 holds clicks of both dates, partition 1 clicks of D1 only.
    sent = produce_to(settings, clicks(D1, 60, "a") + clicks(D2, 60, "b"), partition=0)
    sent += produce_to(settings, clicks(D1, 60, "c"), partition=1)
    stream(settings)
    hot = minute_rows(settings)
    want = batchkit.expected_marts(batchkit.truth(sent).clicks)["traffic_minute"]
    assert {r[:4] for r in hot} == want

    load_bronze(settings, (0,))
    run_silver(settings)
    rec = run_marts(settings).reconciliation
    # Silver holds every click the hot path counted for D2, not for D1.
    assert [r for r in minute_rows(settings) if r[0].date() == D1] == \
        [r for r in hot if r[0].date() == D1]
    assert rec is not None and rec.dates == [D2] and rec.pending == [D1]
    assert set(rec.bronze_behind) == {1}
    assert pending(settings) == [D1]

    # Bronze and silver catch up; a run for D2 alone reconciles the pending D1 as well.
    load_bronze(settings, (1,))
    run_silver(settings)
    summary = run_marts(settings, [D2])
    assert summary.dates == [D2]
    assert summary.reconciliation is not None and summary.reconciliation.dates == [D1, D2]
    assert pending(settings) == []
    assert {r[:4] for r in minute_rows(settings)} == want
