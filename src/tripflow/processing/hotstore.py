"""The hot store: distinct clicks of the last ~48 h of event time in PostgreSQL, and the one
transaction per micro-batch that makes the hot path exactly once.

`HotStore.commit_batch` does, in a single transaction:
  1. lock the batch's partitions' offset rows and check they still hold the offsets this
     worker started from (fencing: after a rebalance, or a commit whose outcome was lost
     with the connection, another worker or an earlier attempt may have stored them);
  2. COPY the clicks into a staging table and `INSERT … ON CONFLICT DO NOTHING` them into
     `tripflow.hot_clicks`, sorted by key, all but those older than clock - horizon ("late
     for hot": counted, and left to the batch path); the rows really added go to `hot_new`;
  3. store the quarantined records (same table and function as the batch path);
  4. store the new offsets;
  5. under a transaction-level advisory lock: advance the clock and totals, and refresh the
     real-time marts for what `hot_new` touched (`tripflow.processing.hot_marts`).
Killed anywhere before the commit, nothing of the batch is visible and the offsets are
unchanged, so a restart reprocesses exactly that batch; killed after, the offsets say so.

Why the refresh is inside the batch's transaction, under one advisory lock: two workers
may add clicks to the same minute (or move the same snapshot) at the same time. Each
refresh recomputes from the whole store, and the lock is held from before the refresh's
first read until the commit, so refreshes run one after the other and each one's reads
(READ COMMITTED: a fresh snapshot per statement) see every batch committed before it plus
its own. The last refresh of a minute therefore always sees all its clicks: no lost
update, and no stale value written after a fresher one. Doing it in the same transaction
(rather than after the commit) also means a crash can never leave stored clicks whose
minute was not refreshed. The insert itself runs before the lock, so workers still insert
in parallel; the lock only serialises the (small) refresh.

Locks are taken in one order everywhere — prune lock (shared), offset rows (by partition),
click keys (sorted), quarantine keys (sorted), refresh lock, state row, mart rows — so
workers cannot deadlock each other; a deadlock or lost connection is retried by the caller.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from tripflow.db import sqlfiles
from tripflow.messaging.sink import PartitionEnd
from tripflow.processing import hot_marts, quarantine
from tripflow.records import rules
from tripflow.records.parser import ParseResult

log = logging.getLogger("tripflow.stream")

# Advisory lock keys (one namespace with db._MIGRATION_LOCK = 7_312_645_001).
PRUNE_LOCK = 7_312_645_101  # shared by batches, exclusive while partitions are dropped
REFRESH_LOCK = 7_312_645_102  # serialises mart refreshes (see module docstring)
PARTITION_LOCK = 7_312_645_103  # serialises partition creation

DEFAULT_GROUP = "tripflow-hot"
# The trend mart compares (clock - 48 h, clock - 24 h] with the last 24 h: the store keeps
# at least that much, whatever the dedup horizon.
TREND_SPAN = timedelta(hours=48)
_PARTITION_PREFIX = "hot_clicks_p"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class HotOptions:
    """Knobs of the hot store (defaults follow spec/marts.md and the issue)."""

    group_id: str = DEFAULT_GROUP
    horizon: timedelta = timedelta(hours=48)  # dedup horizon: older clicks are late for hot
    mart_retention: timedelta = timedelta(days=7)  # traffic minutes and snapshots

    @property
    def store_span(self) -> timedelta:
        """How far back (from the clock) the store must keep clicks."""
        return max(self.horizon, TREND_SPAN)


@dataclass
class BatchCounts:
    records: int = 0  # Kafka records in the batch
    clicks: int = 0  # valid clicks (parser)
    new: int = 0  # added to the hot store
    duplicates: int = 0  # valid, not late, already stored (or repeated in the batch)
    late: int = 0  # older than clock - horizon: not stored, left to the batch path
    quarantined: int = 0  # bad records
    nul_removed: int = 0  # clicks that had U+0000 removed from a string field

    def add(self, other: BatchCounts) -> None:
        for name in ("records", "clicks", "new", "duplicates", "late", "quarantined",
                     "nul_removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class CommitResult:
    """Outcome of one commit_batch call."""

    committed: bool
    counts: BatchCounts = field(default_factory=BatchCounts)
    clock: datetime | None = None
    # When not committed: the offsets actually stored for the batch's partitions.
    stored: dict[int, int | None] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


def _statements(name: str) -> list[str]:
    return sqlfiles.statements("processing/sql", name)


_SQL = {name: _statements(f"{name}.sql") for name in (
    "hot_session", "hot_lock_offsets", "hot_insert", "hot_save_offsets", "hot_register",
    "hot_advance", "hot_partitions", "hot_state", "hot_create_partition", "hot_prune",
    "hot_batch", "hot_progress",
)}
_BATCH_BEGIN, _BATCH_LOCK, _BATCH_CLOCK, _BATCH_COPY, _BATCH_REFRESH_LOCK = _SQL["hot_batch"]


def connect(dsn: str) -> psycopg.Connection:
    """A connection for the hot path: marts on the search path, UTC, explicit transactions."""
    return psycopg.connect(dsn, options="-c search_path=public -c timezone=UTC",
                           connect_timeout=10)


def partition_name(day: date) -> str:
    return f"{_PARTITION_PREFIX}{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _strip_nul(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    # PostgreSQL text cannot hold U+0000 (JSON allows "\u0000"): drop it.
    return pc.replace_substring(column, "\x00", "")


# The parsed click columns a commit reads (stage_csv and the late-for-hot check).
HOT_COLUMNS = ["dedup_key", "event_ts", "session_id", "document_id", "title",
               "clinical_areas", "partition", "offset"]


# The insert's lock order, the hot store key's (hot_insert.sql sorts by it too).
_INSERT_ORDER = [("event_ts", "ascending"), ("dedup_key", "ascending"),
                 ("partition", "ascending"), ("offset", "ascending")]


def stage_csv(clicks: pa.Table) -> bytes:
    """The clicks as CSV rows for COPY into hot_stage (Arrow writes it, in C++), already in
    the insert's order: PostgreSQL's sort then finds its input sorted and does one pass,
    and the stream worker builds this on its main thread while the previous batch
    commits, off the writer thread that bounds the throughput."""
    if clicks.num_rows > 1:
        clicks = clicks.take(pc.sort_indices(clicks, sort_keys=_INSERT_ORDER))
    table = pa.table({
        "dedup_key": clicks["dedup_key"],
        "event_ms": clicks["event_ts"].cast(pa.int64()),
        "session_id": _strip_nul(clicks["session_id"]),
        "document_id": clicks["document_id"],
        "title": _strip_nul(clicks["title"]),
        "areas": pc.binary_join(clicks["clinical_areas"], ","),
        "kafka_partition": clicks["partition"],
        "kafka_offset": clicks["offset"],
    })
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getvalue()


class HotStore:
    """One worker's connection to the hot store (not thread-safe; one per worker)."""

    def __init__(self, dsn: str, topic: str, options: HotOptions | None = None) -> None:
        self.dsn = dsn
        self.topic = topic
        self.options = options or HotOptions()
        self._conn: psycopg.Connection | None = None
        self._partitions: set[date] = set()
        self.clock: datetime | None = None  # as of this worker's last read/commit
        self.store_from: datetime | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn)
            for statement in _SQL["hot_session"]:
                self._conn.execute(statement)
            self._conn.commit()
            self._load_partitions()
            self._read_state()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def broken(self) -> bool:
        """True when the connection is gone (the caller reconnects)."""
        return self._conn is None or self._conn.closed or self._conn.broken

    def reset(self) -> None:
        """Drop the connection after an error; the next use reconnects."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _load_partitions(self) -> None:
        rows = self.conn.execute(_SQL["hot_partitions"][0]).fetchall()
        self.conn.commit()
        self._partitions = {
            datetime.strptime(name[len(_PARTITION_PREFIX):], "%Y%m%d").date()
            for (name,) in rows if name.startswith(_PARTITION_PREFIX)
        }

    def _read_state(self) -> None:
        row = self.conn.execute(_SQL["hot_state"][0]).fetchone()
        self.conn.commit()
        if row is not None:
            self.clock, self.store_from = row

    # -- assignment -------------------------------------------------------------------

    def register(self, partitions: Iterable[int]) -> dict[int, tuple[int | None, str | None]]:
        """Ensure offset rows exist for these partitions; return (next_offset, fingerprint)."""
        params = {"group": self.options.group_id, "topic": self.topic,
                  "partitions": sorted(set(partitions))}
        conn = self.conn
        with conn.transaction():
            conn.execute(_SQL["hot_register"][0], params)
            rows = conn.execute(_SQL["hot_register"][1], params).fetchall()
        return {partition: (next_offset, fingerprint)
                for partition, next_offset, fingerprint in rows}

    def exchange_progress(self, own: dict[int, tuple[int | None, bool]],
                          fresh_s: float) -> dict[int, int | None]:
        """Publish this worker's partitions' progress (partition -> where its records still
        to be written start in event time, whether there are any) and return the other
        partitions' that have records to come, published in the last `fresh_s` seconds
        (partition -> event time or None). See migration 0022 and `alignment`."""
        partitions = sorted(own)
        params = {"group": self.options.group_id, "topic": self.topic,
                  "partitions": partitions, "event_ms": [own[p][0] for p in partitions],
                  "more": [own[p][1] for p in partitions], "fresh_s": fresh_s}
        conn = self.conn
        with conn.transaction():
            rows = conn.execute(_SQL["hot_progress"][0], params).fetchall()
        return dict(rows)

    # -- partitions of the store ----------------------------------------------------------

    def ensure_partitions(self, days: Iterable[date]) -> None:
        """Create the day partitions that do not exist yet (outside any batch transaction:
        creating a partition locks the parent table, briefly)."""
        missing = sorted(set(days) - self._partitions)
        if not missing:
            return
        conn = self.conn
        started = time.perf_counter()
        timeout, lock, create = _SQL["hot_create_partition"]
        with conn.transaction():
            conn.execute(timeout)
            conn.execute(lock, {"lock": PARTITION_LOCK})
            for day in missing:
                conn.execute(sql.SQL(create).format(  # type: ignore[arg-type]
                    name=sql.Identifier(partition_name(day)),
                    start=sql.Literal(_day_start(day)),
                    end=sql.Literal(_day_start(day + timedelta(days=1)))))
        self._partitions.update(missing)
        log.debug("created hot store partitions %s in %.0f ms", ", ".join(map(str, missing)),
                  (time.perf_counter() - started) * 1000)

    def prune_due(self) -> bool:
        if self.clock is None:
            return False
        cutoff = (self.clock - self.options.store_span).date()
        return self.store_from is None or cutoff > self.store_from.date() or any(
            day + timedelta(days=1) <= cutoff for day in self._partitions)

    def prune(self) -> list[date]:
        """Drop the day partitions wholly older than clock - max(horizon, 48 h).

        Whole days only, so nothing within the horizon is ever dropped. Takes the prune
        lock exclusively: no batch is between reading the clock and inserting meanwhile.
        """
        conn = self.conn
        dropped: list[date] = []
        started = time.perf_counter()
        timeout, lock, drop, advance = _SQL["hot_prune"]
        with conn.transaction():
            conn.execute(timeout)
            conn.execute(lock, {"lock": PRUNE_LOCK})
            row = conn.execute(_SQL["hot_state"][0]).fetchone()
            clock = row[0] if row else None
            if clock is None:
                return dropped
            cutoff_ts = clock - self.options.store_span
            cutoff = cutoff_ts.date()  # the first day that must stay
            names = [name for (name,) in conn.execute(_SQL["hot_partitions"][0]).fetchall()]
            for name in names:
                if not name.startswith(_PARTITION_PREFIX):
                    continue
                day = datetime.strptime(name[len(_PARTITION_PREFIX):], "%Y%m%d").date()
                if day < cutoff:
                    conn.execute(sql.SQL(drop).format(  # type: ignore[arg-type]
                        name=sql.Identifier(name)))
                    dropped.append(day)
            store_from = conn.execute(
                advance, {"store_from": _day_start(cutoff)}).fetchone()
        self.clock, self.store_from = clock, store_from[0] if store_from else None
        self._partitions.difference_update(dropped)
        if dropped:
            log.info("hot store: dropped %d day partition(s) up to %s (clock %s, keeping "
                     "from %s) in %.0f ms", len(dropped), max(dropped), _iso(clock), cutoff,
                     (time.perf_counter() - started) * 1000)
        return dropped

    # -- the batch transaction ----------------------------------------------------------

    def commit_batch(
        self,
        parsed: ParseResult,
        *,
        records: int,
        ends: dict[int, PartitionEnd],
        expected: dict[int, int | None],
        staged: bytes | None = None,
    ) -> CommitResult:
        """Store one micro-batch exactly once (see the module docstring).

        parsed: the parser's output with topic/partition/offset context columns.
        ends: per partition of the batch, where it leaves off.
        expected: per partition, the stored next_offset this worker read or wrote last.
        staged: `stage_csv(parsed.clicks)` when the caller built it already (else it is
            staged here). Clicks late for hot are staged too: the insert passes them over.
        """
        options = self.options
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal started
            now = time.perf_counter()
            timings[name] = round((now - started) * 1000, 2)
            started = now

        conn = self.conn  # (re)connects and reads the clock when needed
        clicks = parsed.clicks
        event_ms = clicks["event_ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        # Partitions for every day this batch may store (the clock only grows, so the
        # threshold inside the transaction is at least this one).
        threshold_ms = self._threshold_ms(self.clock)
        keep_days = event_ms[event_ms >= threshold_ms] // rules.ONE_DAY_MS
        self.ensure_partitions(
            date.fromordinal(int(d) + rules.UNIX_EPOCH_ORDINAL) for d in np.unique(keep_days))
        lap("partitions")

        counts = BatchCounts(records=records, clicks=clicks.num_rows)
        partitions = sorted(ends)
        params = {"group": options.group_id, "topic": self.topic, "partitions": partitions}
        fenced: dict[int, int | None] | None = None
        with conn.transaction():
            # No WAL flush wait (see hot_batch.sql): exactly once either way, and commits
            # are much cheaper.
            conn.execute(_BATCH_BEGIN)
            conn.execute(_BATCH_LOCK, {"prune_lock": PRUNE_LOCK})
            conn.execute(_SQL["hot_register"][0], params)  # rows to lock (assignment made them)
            stored = dict(conn.execute(_SQL["hot_lock_offsets"][0], params).fetchall())
            if any(stored.get(p) != expected.get(p) for p in partitions):
                fenced = stored
                raise psycopg.Rollback()  # nothing was written
            clock = conn.execute(_BATCH_CLOCK).fetchone()[0]
            lap("fence")

            threshold_ms = self._threshold_ms(clock)
            counts.late = int((event_ms < threshold_ms).sum())
            in_time = clicks.num_rows - counts.late  # the clicks the insert considers
            if in_time:
                with conn.cursor() as cur:
                    # Every click is staged, late ones too (the insert skips them): most
                    # batches hold a few late clicks, and staging the rest again here, on
                    # the writer thread, cost ≈ 55 ms a batch (bench_stream's copy step).
                    with cur.copy(_BATCH_COPY) as copy:
                        copy.write(staged if staged is not None else stage_csv(clicks))
                    lap("copy")
                    cur.execute(_SQL["hot_insert"][0], {"threshold_ms": threshold_ms})
                    counts.new = max(cur.rowcount, 0)
                lap("insert")
            counts.duplicates = in_time - counts.new
            quarantine.store(conn, parsed.quarantine)
            counts.quarantined = parsed.quarantine.num_rows
            counts.nul_removed = parsed.nul_removed
            conn.execute(_SQL["hot_save_offsets"][0], {
                **params,
                "partitions": partitions,
                "next_offsets": [ends[p].next_offset for p in partitions],
                "fingerprints": [ends[p].fingerprint for p in partitions],
            })
            lap("offsets")

            conn.execute(_BATCH_REFRESH_LOCK, {"refresh_lock": REFRESH_LOCK})
            lap("refresh_lock")
            clock, store_from = conn.execute(_SQL["hot_advance"][0], {
                "records": counts.records, "new": counts.new, "duplicates": counts.duplicates,
                "late": counts.late, "quarantined": counts.quarantined,
                "nul_removed": counts.nul_removed,
            }).fetchone()
            if counts.new:
                hot_marts.refresh(conn, clock=clock, store_from=store_from, options=options,
                                  timings=timings)
            started = time.perf_counter()
        if fenced is not None:
            return CommitResult(committed=False, stored=fenced)
        lap("commit")
        self.clock, self.store_from = clock, store_from
        return CommitResult(committed=True, counts=counts, clock=clock, timings_ms=timings)

    def _threshold_ms(self, clock: datetime | None) -> int:
        """Event times (epoch ms) below this are late for hot."""
        if clock is None:
            return -(2**62)
        return (clock - self.options.horizon - _EPOCH) // timedelta(milliseconds=1)


def _iso(ts: datetime | None) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if ts else "-"
