"""`run_marts` (gold + PostgreSQL cold marts + reconciliation) and `backfill`.

A run rebuilds a set of dates: it reads those dates' silver rows, runs every mart SQL file
on them, replaces the dates in `gold/<mart>` (Delta predicate overwrite, atomic per group
of dates) and in PostgreSQL — every mart, every date of the run, in ONE transaction
(delete + COPY), so a reader sees the old marts or the new, never a mix — then rewrites
the hot traffic-minute mart for those dates and for the dates an earlier run left pending
(reconcile.py: only the dates silver can vouch for). `--changed` rebuilds the dates
whose silver changed since the last `--changed` run (`tripflow.batch_state`, step 'marts');
that mark moves only after the PostgreSQL commit, so a killed run redoes the same dates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from tripflow import db, lake
from tripflow.marts import engine as engines
from tripflow.marts.articles import LoadedArticles
from tripflow.marts.load import empty_tables, first_build, primary_keys, replace_dates
from tripflow.marts.reconcile import (
    HOT_RETENTION_DAYS,
    PENDING,
    Coverage,
    Reconciliation,
    SilverState,
    dates_in_window,
    pending_dates,
    prepare,
    reconcile_checked,
    silver_sources,
    silver_state,
    split_by_store,
)
from tripflow.memory import BATCH_MMAP_THRESHOLD, bound_process_memory
from tripflow.processing.runlog import logged_run, tick
from tripflow.processing.silver import (
    SILVER_SCHEMA,
    SilverSummary,
    check_engine,
    forget_state,
    read_state,
    run_silver,
    write_state,
)
from tripflow.settings import Settings

STATE_STEP = "marts"
# Dates are computed in groups of about this many silver rows (bounded memory). Measured
# at full scale: 1 M rows peaked at 1.64 GB, 400 k at 1.34 GB, same CPU (≈ 30 s).
CHUNK_ROWS = 400_000
# Above this many silver rows a run reads the whole catalogue once instead of per group.
_READ_ALL_ARTICLES_ROWS = 300_000


@dataclass
class MartsSummary:
    """What one `run_marts` did."""

    dates: list[dt.date] = field(default_factory=list)
    engine: str = "duckdb"
    rows_in: int = 0  # silver rows read
    rows_out: dict[str, int] = field(default_factory=dict)  # rows loaded per mart
    reconciliation: Reconciliation | None = None
    titles_from_articles: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds

    def date_range(self) -> str | None:
        if not self.dates:
            return None
        first, last = min(self.dates), max(self.dates)
        return str(first) if first == last else f"{first}..{last}"

    def line(self) -> str:
        marts = ", ".join(f"{name} {rows:,}" for name, rows in self.rows_out.items())
        rec = self.reconciliation
        drift = ""
        if rec and (rec.dates or not rec.pending):
            drift = (f"; reconciled {len(rec.dates)} dates of mart_realtime_traffic_minute: "
                     f"{rec.drift:,} minutes changed")
        if rec and rec.pending:
            drift += (f"; reconciliation pending for {len(rec.pending)} "
                      f"{'date' if len(rec.pending) == 1 else 'dates'} "
                      f"({span(rec.pending)}): {rec.reason()}")
        return (f"marts ({self.engine}): {len(self.dates)} dates "
                f"({self.date_range() or 'no dates'}), {self.rows_in:,} silver rows in; "
                f"{marts or 'nothing loaded'}{drift}; {self.seconds:.1f} s")


def span(dates: list[dt.date]) -> str:
    """'2016-03-01', '2016-03-01..2016-03-03' (every date between), or a list."""
    days = sorted(set(dates))
    if len(days) == 1:
        return str(days[0])
    if (days[-1] - days[0]).days + 1 == len(days):
        return f"{days[0]}..{days[-1]}"
    return ", ".join(map(str, days))


def _groups(dates: list[dt.date], rows: dict[dt.date | None, int],
            chunk_rows: int) -> list[list[dt.date]]:
    groups: list[list[dt.date]] = [[]]
    size = 0
    for day in dates:
        if groups[-1] and size + rows.get(day, 0) > chunk_rows:
            groups.append([])
            size = 0
        groups[-1].append(day)
        size += rows.get(day, 0)
    return [g for g in groups if g]


def run_marts(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    changed: bool = False,
    engine: str | None = None,
    reconcile_days: int | None = HOT_RETENTION_DAYS,
    chunk_rows: int = CHUNK_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
    silver_built_from: int | None = None,
) -> MartsSummary:
    """Rebuild the cold marts (gold + PostgreSQL) for `dates`, or (`changed=True`, the
    default without dates) for the dates silver changed since the last `changed` run.

    silver_built_from: the bronze version silver of `dates` was just rebuilt from (what
    `backfill` knows), for the reconciliation's check (see reconcile.py).
    engine: duckdb or spark (tripflow.spark.marts); default TRIPFLOW_ENGINE."""
    if dates is not None and changed:
        raise ValueError("give dates or changed=True, not both")
    if silver_built_from is not None and dates is None:
        raise ValueError("silver_built_from goes with dates")
    runner = engines.get_engine(check_engine(engine or settings.engine), settings)
    explicit = sorted(set(dates)) if dates is not None else None
    dsn = db.prepare(settings)
    bound_process_memory(BATCH_MMAP_THRESHOLD)
    summary = MartsSummary(engine=runner.name)
    started = time.monotonic()
    with logged_run(dsn, "marts", None) as stats:
        try:
            _run(settings, dsn, runner, explicit, summary, reconcile_days, chunk_rows,
                 on_progress, silver_built_from)
        finally:
            summary.seconds = time.monotonic() - started
            stats.dates = summary.date_range()
            stats.rows_in = summary.rows_in
            stats.rows_out = sum(summary.rows_out.values())
            rec = summary.reconciliation
            stats.detail = (
                ", ".join(f"{k}={v}" for k, v in summary.rows_out.items())
                + (f"; reconciliation: {len(rec.dates)} dates, {rec.minutes_changed} minutes "
                   f"changed, {rec.minutes_deleted} deleted" if rec else "")
                + (f"; reconciliation PENDING for {span(rec.pending)}: {rec.reason_detail()}"
                   if rec and rec.pending else "")
                + f"; timings {summary.timings}")
    return summary


class _Aborted(Exception):
    """Handed to a stage when the run failed elsewhere: its transaction rolls back."""


_STOP, _ABORT = object(), object()


class _Stage(threading.Thread):
    """`consume(items)` in a thread over what `put` hands it (at most one item waiting), so
    the PostgreSQL load and the gold writes of one group overlap computing the next."""

    def __init__(self, name: str, consume: Callable[[Iterator[Any]], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.consume = consume
        self.items: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None

    def _items(self) -> Iterator[Any]:
        while (item := self.items.get()) is not _STOP:
            if item is _ABORT:
                raise _Aborted
            yield item

    def run(self) -> None:
        try:
            self.consume(self._items())
        except BaseException as err:
            self.error = err

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if not self.is_alive():
                raise RuntimeError(f"{self.name} stopped")
            try:
                self.items.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.put(_STOP)
        self.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.is_alive():
            with contextlib.suppress(queue.Full):
                self.items.put(_ABORT, timeout=5)
            self.join(timeout=60)


@dataclass
class _Plan:
    """What a run does, decided before any mart is computed."""

    silver: DeltaTable | None
    silver_uri: str
    options: dict[str, str] | None
    state: SilverState | None  # what silver was built from, read before silver was opened
    todo: list[dt.date]
    groups: list[list[dt.date]]
    marts: list[str]
    keys: dict[str, list[str]]  # primary key of each mart
    articles: LoadedArticles
    window: set[dt.date]  # dates whose hot minutes are reconciled
    expired: list[dt.date]  # pending dates the hot mart no longer keeps
    keyed: set[dt.date]  # dates the hot store holds: checked by their clicks' dedup keys
    extra: list[dt.date]  # pending dates this run does not rebuild (hot minutes only)
    empty: set[str]  # marts holding no row: a first build (load.py)


def _run(settings: Settings, dsn: str, runner: engines.DuckDBEngine,
         explicit: list[dt.date] | None, summary: MartsSummary, reconcile_days: int | None,
         chunk_rows: int, on_progress: Callable[[int, int], None] | None,
         silver_built_from: int | None = None) -> None:
    mark = time.monotonic()
    plan = _plan(settings, dsn, explicit, summary, reconcile_days, chunk_rows)
    if plan is None:
        return  # nothing built yet
    tick(summary.timings, "plan", mark)
    minutes, silver_keys = _compute_and_load(settings, runner, plan, summary, on_progress)
    _reconcile_and_mark(settings, runner, plan, summary, minutes, silver_keys,
                        explicit is None, silver_built_from)


def _todo(dsn: str, silver: DeltaTable, options: dict[str, str] | None) -> list[dt.date]:
    """The dates silver changed since the last `--changed` run."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        since = read_state(conn, STATE_STEP, silver)
    return sorted(d for d in lake.changed_dates(silver, since, options) if d is not None)


def _plan(settings: Settings, dsn: str, explicit: list[dt.date] | None,
          summary: MartsSummary, reconcile_days: int | None, chunk_rows: int) -> _Plan | None:
    """The run's dates, groups and reconciliation window; None when there is nothing to do
    (`--changed` before silver exists)."""
    # What silver was built from: read before silver is opened (see reconcile.py).
    with db.connect(settings, autocommit=True) as conn:
        state = silver_state(conn)
        if not all(lake.exists(settings, lake.gold(m)) for m in engines.mart_names()):
            forget_state(conn, STATE_STEP)
    silver = lake.open_table(settings, lake.SILVER)
    options = lake.storage_options(settings)
    if explicit is None:
        if silver is None:
            return None
        todo = _todo(dsn, silver, options)
    else:
        todo = explicit
    summary.dates = todo
    marts = list(engines.mart_names())
    summary.rows_out = dict.fromkeys(marts, 0)
    articles = LoadedArticles(settings)
    summary.titles_from_articles = articles.loaded
    rows_per_date = lake.rows_per_date(silver) if silver is not None else {}
    groups = _groups(todo, rows_per_date, chunk_rows)
    if sum(rows_per_date.get(d, 0) for d in todo) > _READ_ALL_ARTICLES_ROWS:
        articles.read_all()
    with db.connect(settings, autocommit=True) as conn:
        pending = pending_dates(conn)
        window = set(dates_in_window(conn, sorted(set(todo) | set(pending)), reconcile_days))
        # Dates the hot store holds are checked by their clicks' dedup keys: read those.
        # (The store only ever drops days, so these include every date checked so later.)
        keyed = set(split_by_store(conn, sorted(window))[0])
        keys = primary_keys(conn, marts)
        empty = empty_tables(conn, marts)
    return _Plan(silver, lake.table_uri(settings, lake.SILVER), options, state, todo, groups,
                 marts, keys, articles, window,
                 expired=[d for d in pending if d not in window], keyed=keyed,
                 extra=sorted(window - set(todo)), empty=empty)


def _stages(settings: Settings, plan: _Plan, summary: MartsSummary, runner: Any
            ) -> list[_Stage]:
    """The PostgreSQL load and the gold writes, each a thread over computed groups."""
    timings, marts = summary.timings, plan.marts

    def load_postgres(items: Iterator[tuple[list[dt.date], dict[str, pa.Table]]]) -> None:
        # One transaction for every mart and every date of the run; an empty mart is
        # filled without its indexes, made once at the end (load.py).
        with db.connect(settings) as conn, conn.transaction():
            first = {mart: first_build(conn, mart) if mart in plan.empty else None
                     for mart in marts}
            for group, results in items:
                started = time.monotonic()
                for mart in marts:
                    _, inserted = replace_dates(conn, mart, group, results[mart],
                                                first_build=first[mart] is not None)
                    summary.rows_out[mart] += inserted
                tick(timings, "load", started)
            started = time.monotonic()
            builds = [build for build in first.values() if build is not None]
            for build in builds:
                build.finish(conn)
            if builds:
                started = tick(timings, "index", started)
        tick(timings, "commit", started)

    # Each gold table opened once, by this stage's one thread: delta-rs moves a handle on
    # with each write, where writing by URI reads the table's whole log again every time.
    gold_tables: dict[str, DeltaTable] = {}

    def gold_target(mart: str) -> DeltaTable | str:
        if mart not in gold_tables:
            table = lake.open_table(settings, lake.gold(mart))
            if table is None:  # the first write creates it
                return lake.table_uri(settings, lake.gold(mart))
            gold_tables[mart] = table
        return gold_tables[mart]

    def write_gold(items: Iterator[tuple[list[dt.date], dict[str, pa.Table]]]) -> None:
        for group, results in items:
            started = time.monotonic()
            predicate = lake.date_predicate(group)
            for mart in marts:
                # Not partitioned: a date holds few mart rows, and one file per date and
                # mart (14 k files for the full log) is slow to write and to read. Rows come
                # sorted by primary key (mostly date first), so file statistics prune dates.
                write_deltalake(gold_target(mart), results[mart], mode="overwrite",
                                predicate=predicate, configuration=lake.TABLE_CONFIGURATION,
                                storage_options=plan.options)
            tick(timings, "gold", started)

    if getattr(runner, "writes_gold", False):
        return [_Stage("marts-postgres", load_postgres)]
    return [_Stage("marts-postgres", load_postgres), _Stage("marts-gold", write_gold)]


def _compute_and_load(settings: Settings, runner: engines.DuckDBEngine, plan: _Plan,
                      summary: MartsSummary, on_progress: Callable[[int, int], None] | None
                      ) -> tuple[list[pa.Table], list[pa.Table]]:
    """Compute every group's marts and hand them to the load and gold stages (which
    overlap computing the next group); the exact minutes and the dedup keys of silver
    rows for the reconciliation."""
    timings = summary.timings
    stages = _stages(settings, plan, summary, runner)
    for stage in stages:
        stage.start()
    minutes: list[pa.Table] = []
    silver_keys: list[pa.Table] = []  # dedup_key of silver rows of `keyed` dates
    done = 0
    if on_progress:
        on_progress(0, len(plan.todo))
    try:
        for group in plan.groups:
            mark = time.monotonic()
            if getattr(runner, "writes_gold", False):
                results = _compute_on_lake(runner, plan, group, summary, minutes, silver_keys)
            else:
                results = _compute_here(runner, plan, group, summary, minutes, silver_keys)
            tick(timings, "compute", mark)
            for stage in stages:
                stage.put((group, results))
            done += len(group)
            if on_progress:
                on_progress(done, len(plan.todo))
        for stage in stages:
            stage.finish()
    except BaseException:
        for stage in stages:
            stage.abort()
        raise
    return minutes, silver_keys


def _compute_here(runner: engines.DuckDBEngine, plan: _Plan, group: list[dt.date],
                  summary: MartsSummary, minutes: list[pa.Table], silver_keys: list[pa.Table]
                  ) -> dict[str, pa.Table]:
    """One group's marts from silver rows read here (DuckDB), and its reconciliation input."""
    mark = time.monotonic()
    recent = [d for d in group if d in plan.window]
    rows = _read_silver(plan.silver, plan.silver_uri, group,
                        with_keys=any(d in plan.keyed for d in recent))
    summary.rows_in += rows.num_rows
    tick(summary.timings, "read", mark)
    titles = plan.articles.for_documents(rows.column("document_id"))
    results = runner.run(engines.relations(rows, titles), plan.marts, order_by=plan.keys)
    if recent:  # the hot minutes, only for dates the hot marts still keep
        mask = pc.is_in(rows.column("event_date"), pa.array(recent, pa.date32()))
        _reconcile_input(runner, rows.filter(mask), minutes, silver_keys, plan.keyed)
    return results


def _compute_on_lake(runner: Any, plan: _Plan, group: list[dt.date], summary: MartsSummary,
                     minutes: list[pa.Table], silver_keys: list[pa.Table]
                     ) -> dict[str, pa.Table]:
    """One group's marts by an engine that reads silver and writes gold itself (Spark),
    with the exact minutes of the group's recent dates; the dedup keys the reconciliation
    checks are read here, as with DuckDB."""
    recent = [d for d in group if d in plan.window]
    rows_in, results, recent_minutes = runner.run_dates(group, plan.marts, plan.keys,
                                                        plan.articles, recent)
    summary.rows_in += rows_in
    if recent:
        minutes.append(recent_minutes)
        keyed = [d for d in recent if d in plan.keyed]
        if keyed:
            silver_keys.append(_read_silver(plan.silver, plan.silver_uri, keyed,
                                            with_keys=True).select(["dedup_key"]))
    return results


def _reconcile_and_mark(settings: Settings, runner: engines.DuckDBEngine, plan: _Plan,
                        summary: MartsSummary, minutes: list[pa.Table],
                        silver_keys: list[pa.Table], changed: bool,
                        silver_built_from: int | None) -> None:
    """Reconcile the hot minutes of the window (and of pending dates not rebuilt), drop
    expired pending dates, and (`--changed`) move the mark."""
    mark = time.monotonic()
    if plan.extra:
        _reconcile_input(runner, _read_silver(plan.silver, plan.silver_uri, plan.extra,
                                              with_keys=True),
                         minutes, silver_keys, plan.keyed)
    window = sorted(plan.window)
    with db.connect(settings) as conn:
        if window:
            rebuilt = ((silver_built_from, plan.todo) if silver_built_from is not None
                       else None)
            coverage = Coverage(settings, *silver_sources(settings, plan.state, plan.silver,
                                                          rebuilt))
            prepare(conn, settings.topic, window, coverage)
            conn.commit()
            with conn.transaction():
                summary.reconciliation = reconcile_checked(
                    conn, settings.topic, pa.concat_tables(minutes),
                    pa.concat_tables(silver_keys, promote_options="default")
                    if silver_keys else pa.table({"dedup_key": pa.array([], pa.string())}),
                    window, coverage, plan.expired)
            tick(summary.timings, "reconcile", mark)
        elif plan.expired:
            with conn.transaction():
                conn.execute(f"delete from {PENDING} where event_date = any(%s)",
                             (plan.expired,))
        if changed and plan.silver is not None:
            with conn.transaction():
                write_state(conn, STATE_STEP, plan.silver)


def _read_silver(silver: DeltaTable | None, uri: str, dates: list[dt.date], *,
                 with_keys: bool) -> pa.Table:
    """Silver rows of `dates` (the marts' columns, and dedup_key for the reconciliation)."""
    columns = engines.SILVER_COLUMNS + (["dedup_key"] if with_keys else [])
    if silver is None:
        return SILVER_SCHEMA.empty_table().select(columns)
    return lake.read_columns(lake.file_set(silver, uri, dates), columns)


def _reconcile_input(runner: engines.DuckDBEngine, rows: pa.Table, minutes: list[pa.Table],
                     silver_keys: list[pa.Table], keyed: set[dt.date]) -> None:
    """The exact minutes of some silver rows, and the dedup keys of those of `keyed`
    dates (reconcile.py)."""
    minutes.append(runner.run(engines.relations(rows, None),
                              [engines.RECONCILE_QUERY])[engines.RECONCILE_QUERY])
    if keyed and "dedup_key" in rows.column_names:
        mask = pc.is_in(rows.column("event_date"), pa.array(sorted(keyed), pa.date32()))
        silver_keys.append(rows.filter(mask).select(["dedup_key"]))


def mart_row_counts(settings: Settings) -> dict[str, int]:
    """Rows per cold mart in PostgreSQL (what `make demo` prints)."""
    with db.connect(settings) as conn:
        return {mart: conn.execute(f"select count(*) from {mart}").fetchone()[0]  # type: ignore[index]
                for mart in engines.mart_names()}


@dataclass
class BackfillSummary:
    silver: SilverSummary
    marts: MartsSummary

    def line(self) -> str:
        return f"backfill: {self.silver.line()} | {self.marts.line()}"


def date_span(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def backfill(settings: Settings, start: dt.date, end: dt.date, *,
             reconcile_days: int | None = HOT_RETENTION_DAYS,
             on_progress: Callable[[str, int, int], None] | None = None,
             engine: str | None = None) -> BackfillSummary:
    """Silver, then marts, for every date from `start` to `end` (inclusive), on `engine`
    (default TRIPFLOW_ENGINE). Logged as a 'backfill' run around the 'silver' and 'marts'
    runs it makes."""
    dates = date_span(start, end)
    with logged_run(db.prepare(settings), "backfill", f"{start}..{end}") as stats:
        silver = run_silver(settings, dates, engine=engine, on_progress=(
            (lambda done, total: on_progress("silver", done, total)) if on_progress else None))
        stats.rows_in, stats.duplicates = silver.rows_in, silver.duplicates
        stats.quarantined = silver.quarantined
        marts = run_marts(
            settings, dates, engine=engine, reconcile_days=reconcile_days, on_progress=(
                (lambda done, total: on_progress("marts", done, total)) if on_progress else None),
            silver_built_from=silver.bronze_version)
        stats.rows_out = sum(marts.rows_out.values())
        stats.detail = f"silver: {silver.clicks} clicks; marts: {marts.rows_out}"
    return BackfillSummary(silver, marts)
