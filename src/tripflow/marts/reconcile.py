"""Reconciliation (spec/marts.md): the cold run rewrites `mart_realtime_traffic_minute` for
the dates it rebuilt, from silver — exact values, including late clicks the hot path never
saw — and records how many minutes it changed (the hot/cold drift, a quality figure).

Per date: minutes silver has are inserted or updated when their values differ (only those
get a new `updated_at`); minutes the hot mart has but silver does not are deleted. The
figures go to `tripflow.reconciliation`, one row per date and run.

Only when silver holds every record the hot path had counted for the date, so that a
lagging batch side (bronze behind the hot path, or silver not yet rebuilt from bronze)
never lowers or deletes a correct hot minute. Two ways to know it, both under the hot
path's own locks (the prune lock shared, the refresh lock held until the rewrite commits:
no hot batch counts clicks, refreshes minutes or drops a day in between):

- Dates the hot store still holds (from `hot_state.store_from` on, whole days): the hot
  minutes of such a date are computed from exactly its clicks in `tripflow.hot_clicks`
  (or from an earlier reconciliation's silver, which only grows), so silver vouches for it
  when every one of those clicks' dedup keys is among the date's silver rows read by this
  run. This is the check itself, not a proxy for it: it holds whatever bronze and silver
  versions were involved, also after a replaced broker log, and per date, so a live hot
  path running ahead of bronze does not hold back dates it no longer adds to.
- Older dates (their clicks pruned from the store): by offsets. The hot path has counted
  every record below its committed `tripflow.hot_offsets.next_offset` (the next offset to
  read) in each partition; bronze's Delta application transaction
  `tripflow-bronze:<topic>:<partition>` holds the last offset it WROTE, so it holds them
  all when last + 1 >= next_offset, and when the record it holds at next_offset - 1 is the
  one the hot path read there (same fingerprint: a replaced broker log hands out the same
  offsets again, for other records). A partition bronze never saw is behind as soon as the
  hot path committed anything there, in any consumer group. What matters is not bronze as
  it is now but the bronze version the silver being read was built from (silver lags
  bronze between runs), so the check runs against known lower bounds of that version:
  the bronze version the last `silver --changed` run completed (`batch_state`, step
  'silver'; that run rebuilt every date bronze had changed since the run before, and
  bronze only appends, so every date of silver was built from that version or a later
  one) — when the silver table is the one that run wrote (created before the state was
  stored) and bronze the table it read — and, for the dates a `backfill` just rebuilt, the
  version that silver run read. (Silver runs are assumed not to overlap, as `silver
  --changed` itself assumes.)

A date silver cannot vouch for is not touched at all (no minute updated, inserted or
deleted): it goes to `tripflow.reconciliation_pending` with the reason, is reported by the
run and by `tripflow status`, and a later run reconciles it: every run takes the pending
dates along (even a `--changed` run for which silver changed nothing), and a reconciled
date is recorded in `tripflow.reconciliation` as any other.

Only dates inside the hot marts' retention are rewritten: the hot path keeps traffic
minutes for `HOT_RETENTION_DAYS` before its event-time clock and deletes older ones, so
writing years of history into it (a backfill) would be undone at its next refresh. The
window ends at the later of the hot clock (the newest minute in the mart) and the run's
newest date; `retention_days=None` rewrites every date. Pending dates that left the
window are dropped from the pending list (the hot mart no longer holds them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from tripflow import lake
from tripflow.db import sqlfiles
from tripflow.db.copy import copy_arrow
from tripflow.messaging.sink import fingerprint
from tripflow.processing.hotstore import PRUNE_LOCK, REFRESH_LOCK
from tripflow.settings import Settings

_SQL = sqlfiles.queries("marts", "reconcile.sql")  # names MART and PENDING literally
HOT_RETENTION_DAYS = 7
MART = "mart_realtime_traffic_minute"
PENDING = "tripflow.reconciliation_pending"
SILVER_STEP = "silver"  # tripflow.processing.silver.STATE_STEP


@dataclass
class Reconciliation:
    dates: list[dt.date]  # the dates rewritten
    minutes_in_silver: int = 0
    minutes_changed: int = 0  # inserted or updated
    minutes_deleted: int = 0
    pending: list[dt.date] = field(default_factory=list)  # left as they are, for later
    # Why (when pending): partition -> what bronze lacks there; partitions whose records
    # bronze has but the silver read does not (silver not rebuilt since); other reasons.
    bronze_behind: dict[int, str] = field(default_factory=dict)
    silver_behind: set[int] = field(default_factory=set)
    other: list[str] = field(default_factory=list)
    missing_clicks: int = 0  # hot-path clicks of pending dates the silver read lacks
    expired: list[dt.date] = field(default_factory=list)  # pending dates out of retention

    @property
    def drift(self) -> int:
        return self.minutes_changed + self.minutes_deleted

    def reason(self) -> str:
        """Why the pending dates are pending, in one line."""
        parts = []
        if self.bronze_behind:
            parts.append(f"bronze behind the hot path in {_partitions(self.bronze_behind)}")
        if self.silver_behind:
            parts.append(f"silver not rebuilt from bronze since, in "
                         f"{_partitions(self.silver_behind)}")
        parts += self.other
        if self.missing_clicks:
            parts.append(f"silver lacks {self.missing_clicks:,} of the hot path's clicks")
        return "; ".join(parts)

    def reason_detail(self) -> str:
        """The reason with each partition's figures (stored with the pending dates)."""
        return "; ".join([self.reason(), *(f"partition {p}: {why}" for p, why
                                           in sorted(self.bronze_behind.items()))])


def _partitions(numbers: dict[int, str] | set[int]) -> str:
    word = "partition" if len(numbers) == 1 else "partitions"
    return f"{word} {', '.join(map(str, sorted(numbers)))}"


def dates_in_window(conn: psycopg.Connection, dates: list[dt.date],
                    retention_days: int | None) -> list[dt.date]:
    """The run's dates the hot mart still keeps (see the module doc)."""
    if retention_days is None or not dates:
        return sorted(dates)
    (clock,) = conn.execute(_SQL["hot_clock"]).fetchone()  # type: ignore[misc]
    newest = max(dates)
    if clock is not None:
        newest = max(newest, clock.astimezone(dt.UTC).date())
    first = newest - dt.timedelta(days=retention_days)
    return sorted(d for d in dates if d >= first)


def pending_dates(conn: psycopg.Connection) -> list[dt.date]:
    """Dates whose reconciliation an earlier run deferred."""
    return [d for (d,) in conn.execute(_SQL["pending_dates"])]


# -- what the hot path counted ------------------------------------------------------------
@dataclass(frozen=True)
class HotPosition:
    """Where the hot path stands in one partition: it counted every record below
    `next_offset`; `fingerprint` identifies the one at next_offset - 1."""

    partition: int
    next_offset: int
    fingerprint: str | None


def hot_positions(conn: psycopg.Connection, topic: str) -> list[HotPosition]:
    """The hot path's committed positions in `topic` (every consumer group: each one's
    clicks are in the hot marts), leaving out partitions where nothing was committed."""
    return [HotPosition(p, n, f) for p, n, f in conn.execute(_SQL["hot_positions"], (topic,))]


# -- what silver was built from --------------------------------------------------------------
@dataclass(frozen=True)
class SilverSource:
    """A bronze version silver's rows of `dates` (None: of every date) were built from, or
    from a later version."""

    version: int
    dates: frozenset[dt.date] | None = None

    def covers(self, day: dt.date) -> bool:
        return self.dates is None or day in self.dates


@dataclass(frozen=True)
class SilverState:
    """`tripflow.batch_state` of `silver --changed`: the bronze table and version it read."""

    bronze_table: str
    bronze_version: int
    updated_at: dt.datetime


def silver_state(conn: psycopg.Connection) -> SilverState | None:
    """Read it BEFORE opening the silver table the run reads (see `silver_sources`)."""
    row = conn.execute(_SQL["silver_state"], (SILVER_STEP,)).fetchone()
    return SilverState(row[0], int(row[1]), row[2]) if row else None


def silver_sources(settings: Settings, state: SilverState | None, silver: DeltaTable | None,
                   rebuilt: tuple[int, list[dt.date]] | None = None
                   ) -> tuple[list[SilverSource], DeltaTable | None]:
    """The known bronze versions `silver` (the snapshot the run reads, opened after `state`
    was read) was built from: `state`'s when it describes this silver and this bronze, and
    `rebuilt` = (version, dates) when the caller just rebuilt those dates from it. Also
    bronze as it was opened here (None when it was not), for `Coverage` to reuse."""
    sources = []
    bronze = None
    if state is not None and silver is not None:
        bronze = lake.open_table(settings, lake.BRONZE)
        created_ms = silver.metadata().created_time
        state_ms = state.updated_at.timestamp() * 1000
        if (bronze is not None and bronze.metadata().id == state.bronze_table
                and state.bronze_version <= bronze.version()
                and created_ms is not None and created_ms <= state_ms):
            sources.append(SilverSource(state.bronze_version))
    if rebuilt is not None:
        sources.append(SilverSource(rebuilt[0], frozenset(rebuilt[1])))
    return sources, bronze


class Coverage:
    """Bronze's offsets: now, and at the versions silver was built from (`sources`)."""

    def __init__(self, settings: Settings, sources: list[SilverSource],
                 bronze_now: DeltaTable | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.uri = lake.table_uri(settings, lake.BRONZE)
        self.sources = sources
        self._tables: dict[int | None, DeltaTable | None] = {}
        self._checked: dict[tuple[int, HotPosition], str | None] = {}
        if bronze_now is not None:
            # Bronze just opened (by silver_sources) is bronze now, and is that version: a
            # second open would read the same log again (70 ms at full scale).
            self._tables[None] = self._tables[bronze_now.version()] = bronze_now

    def _table(self, version: int | None) -> DeltaTable | None:
        """Bronze at `version` (None: the newest), None when it cannot be read."""
        if version not in self._tables:
            try:
                self._tables[version] = lake.open_table(self.settings, lake.BRONZE, version)
            except Exception:  # that version's log is gone: it cannot vouch for anything
                self._tables[version] = None
        return self._tables[version]

    def last_written(self, partition: int, version: int | None = None) -> int | None:
        """The last offset of `partition` bronze had written at `version` (None: now)."""
        table = self._table(version)
        return None if table is None else table.transaction_version(
            lake.bronze_app_id(self.topic, partition))

    def behind(self, version: int, positions: list[HotPosition]) -> dict[int, str]:
        """Partitions where bronze at `version` lacks records below the hot path's
        positions, with why. Results are kept: checking again under the lock is free."""
        todo = [pos for pos in positions if (version, pos) not in self._checked]
        if todo:
            self._check(version, todo)
        found: dict[int, str] = {}
        for pos in positions:
            why = self._checked[(version, pos)]
            if why is not None and pos.partition not in found:
                found[pos.partition] = why
        return found

    def _check(self, version: int, positions: list[HotPosition]) -> None:
        table = self._table(version)
        to_identify: list[HotPosition] = []
        for pos in positions:
            key = (version, pos)
            last = self.last_written(pos.partition, version)
            if table is None:
                self._checked[key] = f"bronze version {version} can no longer be read"
            elif last is None:
                self._checked[key] = (f"bronze (version {version}) has none of it, the hot "
                                      f"path counted offsets < {pos.next_offset:,}")
            elif last + 1 < pos.next_offset:
                self._checked[key] = (f"bronze (version {version}) has offsets < {last + 1:,}"
                                      f", the hot path counted offsets < {pos.next_offset:,}")
            elif pos.fingerprint is None:
                self._checked[key] = None
            else:
                to_identify.append(pos)
        if not to_identify:
            return
        assert table is not None
        held = _fingerprints(table, self.uri, self.topic,
                             {(pos.partition, pos.next_offset - 1) for pos in to_identify})
        for pos in to_identify:
            offset = pos.next_offset - 1
            same = pos.fingerprint in held.get((pos.partition, offset), set())
            self._checked[(version, pos)] = None if same else (
                f"the record bronze (version {version}) holds at offset {offset:,} is not "
                "the one the hot path read there (the broker's log was replaced?)")

    def by_offsets(self, dates: list[dt.date], positions: list[HotPosition],
                   result: Reconciliation) -> list[dt.date]:
        """The `dates` a source version of theirs holds every record below the hot path's
        positions for; the reasons for the others go to `result`."""
        if not positions:  # the hot path counted nothing: silver is the whole truth
            return sorted(dates)
        behind = {s.version: self.behind(s.version, positions) for s in self.sources}
        complete = []
        for day in sorted(dates):
            versions = [s.version for s in self.sources if s.covers(day)]
            if any(not behind[v] for v in versions):
                complete.append(day)
                continue
            if not versions:
                why = ("the bronze version silver was built from is not known (run "
                       "`tripflow silver --changed`)")
                if why not in result.other:
                    result.other.append(why)
            for v in versions:
                for p, why in behind[v].items():
                    result.bronze_behind.setdefault(p, why)
        return complete


def _fingerprints(table: DeltaTable, uri: str, topic: str, wanted: set[tuple[int, int]]
                  ) -> dict[tuple[int, int], set[str]]:
    """The fingerprints (as the stream worker computes them) of the rows `table` holds at
    these (partition, offset) positions of `topic`. Only the files whose statistics can
    hold one of them are read."""
    files = lake.files_holding(table, uri, wanted)
    rows = lake.read_positions(files, topic, wanted,
                               ["partition", "offset", "kafka_timestamp", "key", "value"])
    # Delta hands timestamps back in microseconds; a record without one was read as -1.
    stamps = rows["kafka_timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    found: dict[tuple[int, int], set[str]] = {}
    for p, offset, ts, key, value in zip(
            rows["partition"].to_pylist(), rows["offset"].to_pylist(), stamps.to_pylist(),
            rows["key"].to_pylist(), rows["value"].to_pylist(), strict=True):
        found.setdefault((p, offset), set()).add(
            fingerprint(-1 if ts is None else ts, key, value))
    return found


# -- rewriting ----------------------------------------------------------------------------------
def _by_content(conn: psycopg.Connection, keys: pa.Table, dates: list[dt.date],
                coverage: Coverage, result: Reconciliation) -> list[dt.date]:
    """The `dates` whose every click in the hot store is among `keys` (dedup_key of the
    silver rows read); the reasons for the others go to `result`."""
    if not dates:
        return []
    conn.execute(_SQL["keys_stage"])
    conn.execute("delete from reconcile_keys")
    copy_arrow(conn, "reconcile_keys", pa.table({"dedup_key": pc.unique(
        keys.column("dedup_key").combine_chunks())}))
    conn.execute("analyze reconcile_keys")
    missing = conn.execute(_SQL["missing_clicks"], _span(dates)).fetchall()
    lacking = set()
    for day, partition, count, offset in missing:
        lacking.add(day)
        result.missing_clicks += count
        last = coverage.last_written(partition)
        if last is None or last < offset:
            have = "none of it" if last is None else f"offsets < {last + 1:,}"
            result.bronze_behind.setdefault(
                partition, f"bronze has {have}, the hot path counted clicks up to offset "
                           f"{offset:,}")
        else:
            result.silver_behind.add(partition)
    return [d for d in dates if d not in lacking]


def _span(dates: list[dt.date]) -> dict[str, object]:
    return {"low": dt.datetime.combine(min(dates), dt.time(), dt.UTC),
            "high": dt.datetime.combine(max(dates) + dt.timedelta(days=1), dt.time(), dt.UTC),
            "dates": sorted(dates)}


def split_by_store(conn: psycopg.Connection, dates: list[dt.date]
                   ) -> tuple[list[dt.date], list[dt.date]]:
    """(dates the hot store holds whole, dates it pruned: from `hot_state.store_from`)."""
    row = conn.execute(_SQL["store_from"]).fetchone()
    kept_from = row[0].astimezone(dt.UTC).date() if row and row[0] is not None else None
    return ([d for d in dates if kept_from is None or d >= kept_from],
            [d for d in dates if kept_from is not None and d < kept_from])


def prepare(conn: psycopg.Connection, topic: str, dates: list[dt.date],
            coverage: Coverage) -> None:
    """Read what bronze the check of `dates` needs now, before the hot path's locks are
    taken (under them, only positions the hot path reached meanwhile are read)."""
    coverage.last_written(0)  # opens bronze as it is now (what the reasons compare with)
    _, pruned = split_by_store(conn, dates)
    if pruned:
        coverage.by_offsets(pruned, hot_positions(conn, topic), Reconciliation(dates=[]))


def reconcile_checked(conn: psycopg.Connection, topic: str, minutes: pa.Table, keys: pa.Table,
                      dates: list[dt.date], coverage: Coverage,
                      expired: list[dt.date] | None = None) -> Reconciliation:
    """Inside the caller's transaction: take the hot path's locks, rewrite the `dates`
    silver can vouch for (`reconcile`: `minutes` and `keys` come from the silver rows the
    run read), store the others as pending, and clear the rewritten and `expired` ones
    from the pending list (see the module doc)."""
    conn.execute("select pg_advisory_xact_lock_shared(%s)", (PRUNE_LOCK,))
    conn.execute("select pg_advisory_xact_lock(%s)", (REFRESH_LOCK,))
    in_store, pruned = split_by_store(conn, dates)
    verdict = Reconciliation(dates=[])
    complete = _by_content(conn, keys, in_store, coverage, verdict)
    complete += coverage.by_offsets(pruned, hot_positions(conn, topic), verdict)
    result = reconcile(conn, minutes, sorted(complete))
    result.pending = sorted(set(dates) - set(complete))
    if result.pending:
        result.bronze_behind, result.silver_behind = verdict.bronze_behind, verdict.silver_behind
        result.other, result.missing_clicks = verdict.other, verdict.missing_clicks
    result.expired = sorted(expired or [])
    done = result.dates + result.expired
    if done:
        conn.execute(_SQL["pending_clear"], (done,))
    if result.pending:
        with conn.cursor() as cur:
            cur.executemany(_SQL["pending_store"],
                            [(d, result.reason_detail()) for d in result.pending])
    return result


def reconcile(conn: psycopg.Connection, minutes: pa.Table, dates: list[dt.date]) -> Reconciliation:
    """Rewrite the hot mart's minutes of `dates` from `minutes` (the output of
    reconcile_traffic_minute.sql, any dates), inside the caller's transaction."""
    result = Reconciliation(dates=sorted(dates))
    if not dates:
        return result
    day = pc.cast(pc.cast(minutes.column("event_minute"), pa.timestamp("ms")), pa.date32())
    wanted = pc.is_in(day, pa.array(dates, pa.date32()))
    minutes, day = minutes.filter(wanted), day.filter(wanted)
    conn.execute(_SQL["minutes_stage"])
    conn.execute("delete from reconcile_stage")
    copy_arrow(conn, "reconcile_stage", minutes.select(
        ["event_minute", "total_clicks", "unique_sessions", "unique_docs"]))
    low = dt.datetime.combine(min(dates), dt.time(), dt.UTC)
    high = dt.datetime.combine(max(dates) + dt.timedelta(days=1), dt.time(), dt.UTC)
    span = {"low": low, "high": high, "dates": dates}
    in_hot = dict(conn.execute(_SQL["minutes_in_hot"], span).fetchall())
    deleted = conn.execute(_SQL["minutes_delete"], span).fetchall()
    changed = conn.execute(_SQL["minutes_upsert"]).fetchall()
    per_date = {d: [0, 0, 0, in_hot.get(d, 0)] for d in dates}
    for item in pc.value_counts(day).to_pylist():
        per_date[item["values"]][0] = item["counts"]
    for (d,) in changed:
        per_date[d][1] += 1
    for (d,) in deleted:
        per_date[d][2] += 1
    with conn.cursor() as cur:
        cur.executemany(_SQL["record"], [(d, *figures) for d, figures in sorted(per_date.items())])
    result.minutes_in_silver = sum(v[0] for v in per_date.values())
    result.minutes_changed = sum(v[1] for v in per_date.values())
    result.minutes_deleted = sum(v[2] for v in per_date.values())
    return result
