"""`tripflow cdc capture`: Debezium's embedded engine publishes catalog.documents' changes.

The engine runs on its own thread in a JVM inside this process (pydbzengine); the main
thread only waits, so SIGTERM/SIGINT (the JVM runs with -Xrs and leaves signals to Python)
close the engine cleanly: it flushes its offsets and releases the replication slot. Each
batch Debezium hands over is published and flushed to the broker before the handler
returns, and only then does Debezium count it as processed, so a kill -9 at any moment
loses nothing: the next run resumes from the last flushed offset and may publish a few
changes again (the apply side drops repeats).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import psycopg
from confluent_kafka import KafkaError, Producer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tripflow import cdc, db, services
from tripflow.cdc import CdcError
from tripflow.db import sqlfiles
from tripflow.ingestion.admin import ensure_topic
from tripflow.messaging.config import producer_config
from tripflow.messaging.control import stop_on_signals
from tripflow.settings import Settings

log = logging.getLogger("tripflow.cdc")
_SQL = sqlfiles.queries("cdc", "cdc.sql")
_ROLE_LOCK = 7_312_645_018  # serialises role set-up (two captures starting at once)
OFFSETS_TABLE = "cdc_debezium_offsets"  # in schema tripflow (Debezium creates it)
STARTUP_S = 20.0  # --until-idle: the JVM start and the snapshot come first
# A small JVM: the serial collector instead of pydbzengine's G1 (whose bookkeeping costs
# tens of MB), C1 only, a bounded heap, metaspace and code cache.
JVM_OPTS = ["-XX:-UseG1GC", "-XX:+UseSerialGC", "-Xms32m", "-Xmx192m",
            "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=48m",
            "-XX:MaxMetaspaceSize=128m", "-Xss512k",
            "-Xrs"]  # signals stay Python's: SIGTERM closes the engine, not the JVM


@dataclass
class CaptureSummary:
    topic: str
    slot: str
    changes: int = 0
    last_lsn: int | None = None
    seconds: float = 0.0
    stopped: str = ""
    first_change_s: float | None = None

    def line(self) -> str:
        first = "" if self.first_change_s is None else \
            f", first after {self.first_change_s:.1f} s"
        return (f"cdc capture: {self.changes:,} changes to {self.topic} (slot {self.slot}, "
                f"last LSN {self.last_lsn}){first}; stopped ({self.stopped}) after "
                f"{self.seconds:.1f} s")


def ensure_role(settings: Settings, dsn: str) -> tuple[str, str]:
    """The replication role of this database, created or updated: LOGIN REPLICATION, its
    password (generated under TRIPFLOW_HOME), SELECT on the catalogue. Returns (role,
    password)."""
    role, password = cdc.role(dsn), ""
    password = cdc.password(settings, role)
    database = db.database_of(dsn)
    ident = sql.Identifier(role)
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute("select pg_advisory_xact_lock(%s)", (_ROLE_LOCK,))
            verb = "alter" if conn.execute(_SQL["role_exists"], {"role": role}).fetchone() \
                else "create"
            conn.execute(sql.SQL(verb + " role {} with login replication password {}").format(
                ident, sql.Literal(password)))
            conn.execute(sql.SQL("grant connect on database {} to {}").format(
                sql.Identifier(database), ident))
            conn.execute(sql.SQL("grant usage on schema catalog to {}").format(ident))
            conn.execute(sql.SQL("grant select on catalog.documents to {}").format(ident))
    except psycopg.errors.InsufficientPrivilege as err:
        raise CdcError(
            f"cannot set up the replication role {role!r} ({err.diag.message_primary}): "
            f"create it yourself (LOGIN REPLICATION, SELECT on catalog.documents) and set "
            f"TRIPFLOW_CDC_PASSWORD to its password") from None
    return role, password


def setup(settings: Settings) -> tuple[str, str]:
    """What a capture needs before it starts (Debezium Server's too, in the cluster): the
    replication role and the change topic (one partition: changes stay in commit order).
    Returns (role, topic)."""
    settings = services.resolve(settings)
    dsn = db.prepare(settings)
    role, _password = ensure_role(settings, dsn)
    topic = cdc.topic(settings)
    ensure_topic(settings.model_copy(update={"topic": topic}), partitions=1)
    return role, topic


def check_wal_level(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        level = conn.execute("show wal_level").fetchone()
    if not level or level[0] != "logical":
        raise CdcError(
            f"PostgreSQL runs with wal_level={level[0] if level else '?'}; change data capture "
            "needs wal_level=logical: `tripflow services up` restarts the embedded server "
            "with it; for your own server set it in postgresql.conf and restart")


def engine_properties(settings: Settings, dsn: str, role: str, password: str) -> dict[str, str]:
    """Debezium's PostgreSQL connector and engine configuration."""
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "127.0.0.1")
    port = str(info.get("port") or 5432)
    database = db.database_of(dsn)
    return {
        "name": role,  # the engine's offsets are kept under this name
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": host, "database.port": port, "database.dbname": database,
        "database.user": role, "database.password": password,
        "topic.prefix": settings.cdc_topic_prefix,
        "table.include.list": cdc.TABLE,
        "plugin.name": "pgoutput", "slot.name": role,
        "publication.name": cdc.PUBLICATION, "publication.autocreate.mode": "disabled",
        "snapshot.mode": "initial",
        "tombstones.on.delete": "false",
        # Keeps the slot's confirmed LSN moving while other tables write WAL (lag, disk).
        "heartbeat.interval.ms": "5000",
        "key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false",
        "offset.storage": "io.debezium.storage.jdbc.offset.JdbcOffsetBackingStore",
        "offset.storage.jdbc.connection.url":
            f"jdbc:postgresql://{host}:{port}/{database}?currentSchema=tripflow",
        "offset.storage.jdbc.connection.user": str(info.get("user") or ""),
        "offset.storage.jdbc.connection.password": str(info.get("password") or ""),
        "offset.storage.jdbc.table.name": OFFSETS_TABLE,
        "offset.flush.interval.ms": "1000",
        "max.batch.size": "2048", "poll.interval.ms": "100",
    }


class _Progress:
    """Counts and the last LSN, written to tripflow.cdc_capture at most once a second."""

    def __init__(self, dsn: str, slot: str, summary: CaptureSummary) -> None:
        self.dsn, self.slot, self.summary = dsn, slot, summary
        self.window: deque[tuple[float, int]] = deque()
        self.unsaved = 0
        self.saved_at = 0.0
        self.started = time.monotonic()
        self.last_change = self.started

    def add(self, changes: int, lsn: int | None) -> None:
        now = time.monotonic()
        if changes:
            self.last_change = now
            if self.summary.first_change_s is None:
                self.summary.first_change_s = round(now - self.started, 2)
        self.summary.changes += changes
        self.summary.last_lsn = lsn if lsn is not None else self.summary.last_lsn
        self.unsaved += changes
        self.window.append((now, changes))
        if now - self.saved_at >= 1.0:
            self.save()

    def save(self) -> None:
        now = time.monotonic()
        while self.window and now - self.window[0][0] > 10.0:
            self.window.popleft()
        span = min(10.0, max(now - self.started, 1.0))
        rate = round(sum(n for _, n in self.window) / span, 2)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(_SQL["capture_progress"], {"slot": self.slot, "changes": self.unsaved,
                                                    "lsn": self.summary.last_lsn, "rate": rate})
        self.unsaved, self.saved_at = 0, now


def _publisher(producer: Producer, progress: _Progress) -> Any:
    """The handler Debezium calls with each batch (on the engine's thread)."""
    from pydbzengine import BasePythonChangeHandler  # imports JPype's Java classes

    class Publisher(BasePythonChangeHandler):
        def handleJsonBatch(self, records: list[Any]) -> None:  # Java's name
            failures: list[KafkaError] = []

            def delivered(err: KafkaError | None, _msg: object) -> None:
                if err is not None:
                    failures.append(err)

            published, lsn = 0, None
            for record in records:
                value = record.value()
                destination = str(record.destination())
                if value is None or not destination.endswith(f".{cdc.TABLE}"):
                    continue  # heartbeats
                raw = str(value).encode()
                envelope = orjson.loads(raw)
                lsn = envelope["source"].get("lsn")
                key = orjson.loads(str(record.key()))["document_id"]
                producer.produce(destination, raw, str(key).encode(), on_delivery=delivered)
                published += 1
                producer.poll(0)
            if producer.flush(60) or failures:
                # Raising stops the engine before it counts the batch: nothing is lost.
                raise CdcError(f"publishing {published} changes failed: "
                               f"{failures[0].str() if failures else 'broker timeout'}")
            progress.add(published, lsn)

    return Publisher()


def capture(settings: Settings, *, until_idle: float | None = None,
            stop: threading.Event | None = None) -> CaptureSummary:
    """Run Debezium on catalog.documents until stopped (or idle for `until_idle` s)."""
    from pydbzengine import DebeziumJsonEngine
    from pydbzengine.engine.jvm import ensure_jvm_started

    settings = services.resolve(settings)
    dsn = db.prepare(settings)
    check_wal_level(dsn)
    role, topic = setup(settings)
    password = cdc.password(settings, role)
    _wait_for_slot(dsn, role)
    summary = CaptureSummary(topic, role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_SQL["capture_started"], {"slot": role, "topic": topic})
    progress = _Progress(dsn, role, summary)
    producer = Producer(producer_config(settings, **{"client.id": "tripflow-cdc", "linger.ms": 2}))
    config = resources.files("tripflow.cdc") / "log4j2.properties"
    ensure_jvm_started(jvm_opts=[*JVM_OPTS, f"-Dlog4j2.configurationFile={config}"])
    engine = DebeziumJsonEngine(properties=engine_properties(settings, dsn, role, password),
                                handler=_publisher(producer, progress))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as err:  # reported on the main thread
            failure.append(err)

    stop = stop or threading.Event()
    thread = threading.Thread(target=run, name="debezium", daemon=True)
    with stop_on_signals(stop):
        thread.start()
        summary.stopped = _wait(thread, stop, progress, until_idle)
        engine.close()  # flushes offsets, releases the slot
        thread.join(60)
    progress.save()
    summary.seconds = round(time.monotonic() - progress.started, 2)
    if failure and summary.stopped == "error":
        raise CdcError(f"Debezium stopped: {failure[0]}") from failure[0]
    return summary


def _wait_for_slot(dsn: str, slot: str, timeout_s: float = 60.0) -> None:
    """A capture killed a moment ago may still hold the slot (its walsender notices the
    closed connection shortly): wait for it rather than fail."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(_SQL["slot_lag"], {"slot": slot}).fetchone()
            if row is None or not row[0]:
                return
            if time.monotonic() > deadline:
                raise CdcError(f"replication slot {slot!r} is in use by another capture: "
                               "stop it first (one capture per database)")
            time.sleep(0.5)


def _wait(thread: threading.Thread, stop: threading.Event, progress: _Progress,
          until_idle: float | None) -> str:
    while not stop.wait(0.5):
        if not thread.is_alive():
            return "error"
        if until_idle is None:
            continue
        now = time.monotonic()
        quiet_since = progress.last_change
        if progress.summary.first_change_s is None:
            quiet_since = progress.started + STARTUP_S
        if now - quiet_since >= until_idle:
            return "idle"
    return "stop"


def status(dsn: str) -> list[dict[str, Any]]:
    """Each capture's last LSN, changes, changes/s and its slot's lag (for `tripflow
    status`)."""
    out = []
    with psycopg.connect(dsn) as conn:
        for slot, topic, lsn, changes, rate, started, updated in conn.execute(
                _SQL["capture_status"]).fetchall():
            lag = conn.execute(_SQL["slot_lag"], {"slot": slot}).fetchone()
            out.append({"slot": slot, "topic": topic, "last_lsn": lsn, "changes": changes,
                        "changes_per_s": float(rate or 0), "started_at": started,
                        "updated_at": updated, "slot_active": bool(lag and lag[0]),
                        "confirmed_lsn": lag[1] if lag else None,
                        "lag_bytes": lag[2] if lag else None})
    return out
