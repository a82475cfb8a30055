"""The data-quality checks and their registry.

A check is a plain function over a `Scope` (the settings, one PostgreSQL connection, the
dates checked) registered with `@check(name, layer, severity, threshold)`; it returns
`Result`s: one summary row (event_date null) and, for per-date checks, one row per date
that broke the threshold. `severity` says what a failed result means, as in Delta Live
Tables expectations: 'fail' fails the run (`tripflow quality` exits non-zero), 'warn' is
only reported and stored.

Everything is plain SQL: DuckDB over the files of the lake's Delta tables (only
the files the Delta log lists; a listed file that is missing is reported, not read), and
SQL on PostgreSQL for the marts and tripflow's own tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tripflow import duck, lake
from tripflow.settings import Settings

LAYERS = ("bronze", "silver", "gold", "hot")
UNMAPPED_AREA_RATE = 0.05  # share of a date's clicks with an area outside CANONICAL_AREAS
QUARANTINE_RATE = 0.02  # share of a date's bronze records quarantined
# Share of a date's minutes reconciliation had to rewrite. The hot path is exact within
# its horizon (spec/marts.md, "Reconciliation"): only clicks arriving later than it, which
# the batch path alone counts, may change a minute, and those are a small share.
DRIFT_RATE = 0.05
_SHOWN = 5  # dates / partitions named in a detail


@dataclass(frozen=True)
class Result:
    check: str
    layer: str
    severity: str  # 'warn' | 'fail'
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str
    event_date: dt.date | None = None

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def fails_run(self) -> bool:
        return not self.passed and self.severity == "fail"


@dataclass(frozen=True)
class Check:
    name: str
    layer: str
    severity: str
    threshold: float
    run: Callable[[Scope, Check], list[Result]]

    def result(self, observed: float, detail: str, day: dt.date | None = None,
               passed: bool | None = None) -> Result:
        ok = observed <= self.threshold if passed is None else passed
        return Result(self.name, self.layer, self.severity, ok, observed, self.threshold,
                      detail, day)


CHECKS: list[Check] = []


def check(name: str, layer: str, severity: str, threshold: float = 0.0
          ) -> Callable[[Callable[[Scope, Check], list[Result]]],
                        Callable[[Scope, Check], list[Result]]]:
    """Register a check (names are unique; the registry keeps definition order)."""
    assert layer in LAYERS and severity in ("warn", "fail")

    def register(fn: Callable[[Scope, Check], list[Result]]
                 ) -> Callable[[Scope, Check], list[Result]]:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"two quality checks named {name}")
        CHECKS.append(Check(name, layer, severity, threshold, fn))
        return fn

    return register


# -- what the checks read ------------------------------------------------------------------------
@dataclass
class LakeFiles:
    """The files the Delta log lists for some dates, split into present and missing."""

    files: lake.FileSet
    filesystem: pafs.FileSystem
    missing: list[str]

    @cached_property
    def rows(self) -> dict[dt.date | None, int]:
        """Rows per date, from the footers of the files present. Read when a check asks:
        at full scale bronze's 10 k footers take ≈ 0.7 s, and only gold's totals check
        needs counts (of silver)."""
        rows: dict[dt.date | None, int] = {}
        for path, day in self.files.files:
            with self.filesystem.open_input_file(path) as handle:
                rows[day] = rows.get(day, 0) + pq.ParquetFile(handle).metadata.num_rows
        return rows


def lake_files(settings: Settings, relative: str, dates: list[dt.date] | None
               ) -> LakeFiles | None:
    """The table's files of `dates` (None = every file); None when the table does not exist.
    Row counts (`rows`) come from the Parquet footers of the files actually there, so a
    file lost from storage shows in the counts (the Delta log's own statistics would hide
    it)."""
    table = lake.open_table(settings, relative)
    if table is None:
        return None
    uri = lake.table_uri(settings, relative)
    files = lake.file_set(table, uri, dates)
    filesystem = lake.filesystem_of(uri)
    present: list[tuple[str, dt.date | None]] = []
    missing: list[str] = []
    for path, day in files.files:
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            missing.append(path)
        else:
            present.append((path, day))
    return LakeFiles(replace(files, files=tuple(present)), filesystem, missing)


@dataclass
class Scope:
    settings: Settings
    conn: psycopg.Connection
    dates: list[dt.date] | None  # None: every date
    silver_by_date: list[tuple[dt.date | None, int, int, int]] | None = None  # one scan

    @cached_property
    def silver(self) -> LakeFiles | None:
        return lake_files(self.settings, lake.SILVER, self.dates)

    @cached_property
    def bronze_all(self) -> LakeFiles | None:
        return lake_files(self.settings, lake.BRONZE, None)

    def date_filter(self, column: str = "event_date") -> tuple[str, dict[str, object]]:
        """A PostgreSQL condition selecting the scope's dates, and its parameters."""
        if self.dates is None:
            return "true", {}
        return f"{column} = any(%(dates)s)", {"dates": self.dates}


def _duck(**tables: pa.Table | LakeFiles) -> duckdb.DuckDBPyConnection:
    """A private DuckDB connection with these Arrow tables, or the present files of a lake
    table, by name. DuckDB scans the files in streamed batches, reading only the columns a
    query names (never the whole table in memory at once)."""
    connection = duck.connect()
    for name, table in tables.items():
        if isinstance(table, LakeFiles):
            lake.duckdb_view(connection, name, table.files)
        else:
            connection.register(name, table)
    return connection


def _days(days: list[dt.date]) -> str:
    shown = ", ".join(str(d) for d in days[:_SHOWN])
    return shown + (f", … ({len(days)} dates)" if len(days) > _SHOWN else "")


def _rate_results(c: Check, rates: list[tuple[dt.date, int, int]], what: str) -> list[Result]:
    """Per-date rates (date, part, whole): the worst as the summary, a row per bad date."""
    if not rates:
        return [c.result(0, "no dates to check")]
    per_date = [(day, part / whole if whole else 0.0, part, whole) for day, part, whole in rates]
    worst = max(per_date, key=lambda r: r[1])
    bad = [r for r in per_date if r[1] > c.threshold]
    results = [c.result(round(worst[1], 6),
                        f"worst {worst[0]}: {worst[2]:,} of {worst[3]:,} {what}; "
                        f"{len(bad)} of {len(per_date)} dates above {c.threshold:.2%}")]
    results += [c.result(round(rate, 6), f"{part:,} of {whole:,} {what}", day)
                for day, rate, part, whole in bad]
    return results


# -- bronze ----------------------------------------------------------------------------------
@check("bronze.offsets_contiguous", "bronze", "warn")
def offsets_contiguous(scope: Scope, c: Check) -> list[Result]:
    """Per topic partition, offsets min..max each once: gaps + repeats. A warning only: a
    log may start above 0 (retention), and a replaced broker log is copied again from its
    start, repeating positions on purpose (processing/bronze.py). Whole table: a partition's
    offsets span every date."""
    files = scope.bronze_all
    if files is None:
        return [c.result(0, "no bronze table")]
    rows = _duck(rows=files)
    total = rows.sql("select count(*) from rows").fetchall()[0][0]
    faults = rows.sql("""
        select topic, "partition", min("offset"), max("offset"),
               max("offset") - min("offset") + 1 - count(distinct "offset") as gaps,
               count(*) - count(distinct "offset") as repeats
        from rows group by all having gaps > 0 or repeats > 0 order by 1, 2""").fetchall()
    observed = sum(f[4] + f[5] for f in faults)
    shown = "; ".join(f"{t}[{p}] {lo}..{hi}: {g} missing, {r} repeated"
                      for t, p, lo, hi, g, r in faults[:_SHOWN])
    detail = shown or f"{total:,} rows, every partition contiguous"
    if files.missing:
        detail += f"; {len(files.missing)} listed files missing (not read)"
    return [c.result(observed, detail, passed=observed == 0 and not files.missing)]


# -- silver ----------------------------------------------------------------------------------
@check("silver.files_present", "silver", "fail")
def silver_files_present(scope: Scope, c: Check) -> list[Result]:
    """Every file the silver Delta log lists for the dates exists."""
    files = scope.silver
    if files is None:
        return [c.result(0, "no silver table")]
    missing = files.missing
    detail = (f"missing: {', '.join(missing[:_SHOWN])}" if missing
              else f"{len(files.files.files)} files present")
    return [c.result(len(missing), detail)]


@check("silver.dedup_key_unique", "silver", "fail")
def dedup_key_unique(scope: Scope, c: Check) -> list[Result]:
    """dedup_key is non-null and unique (one row per click)."""
    if scope.silver is None:
        return [c.result(0, "no silver table")]
    rows = _duck(rows=scope.silver)
    # Distinct 64-bit hashes are far cheaper to count than distinct strings, and as many
    # distinct hashes as keys proves the keys distinct; fewer (a repeat, or a collision)
    # is settled by counting the strings themselves.
    total, keyed, hashes = rows.sql(
        "select count(*), count(dedup_key), count(distinct hash(dedup_key)) "
        "from rows").fetchall()[0]
    distinct = keyed if hashes == keyed else rows.sql(
        "select count(distinct dedup_key) from rows").fetchall()[0][0]
    nulls, repeats = total - keyed, keyed - distinct
    return [c.result(nulls + repeats, f"{total:,} rows: {nulls:,} null, {repeats:,} repeated")]


def _silver_by_date(scope: Scope) -> list[tuple[dt.date | None, int, int, int]]:
    """(event_date, rows, rows with an unmapped area, rows whose event_ts falls on another
    UTC date) per silver date, in one scan shared by the checks that need them."""
    if scope.silver_by_date is None:
        assert scope.silver is not None
        scope.silver_by_date = _duck(rows=scope.silver).sql("""
            select event_date, count(*),
                   count(*) filter (where len(unmapped_areas) > 0),
                   count(*) filter (where event_ts is null or event_date is null
                       or epoch_ms(event_ts) // 86400000 <> event_date - date '1970-01-01')
            from rows group by 1 order by 1 nulls last""").fetchall()
    return scope.silver_by_date


@check("silver.event_date_is_utc_date", "silver", "fail")
def event_date_is_utc_date(scope: Scope, c: Check) -> list[Result]:
    """event_date is the UTC date of event_ts."""
    if scope.silver is None:
        return [c.result(0, "no silver table")]
    per_date = _silver_by_date(scope)
    total = sum(r[1] for r in per_date)
    wrong = sum(r[3] for r in per_date)
    bad_days = [r[0] for r in per_date if r[3] and r[0] is not None]
    detail = (f"{wrong:,} of {total:,} rows on another date"
              + (f" ({_days(bad_days)})" if bad_days else ""))
    return [c.result(wrong, detail)]


@check("silver.unmapped_area_rate", "silver", "warn", UNMAPPED_AREA_RATE)
def unmapped_area_rate(scope: Scope, c: Check) -> list[Result]:
    """Share of a date's clicks naming an area outside CANONICAL_AREAS (silver keeps them,
    title-cased, in `unmapped_areas`; the normalisation decides what is canonical)."""
    if scope.silver is None:
        return [c.result(0, "no silver table")]
    rates = [(day, unmapped, rows) for day, rows, unmapped, _ in _silver_by_date(scope)]
    return _rate_results(c, rates, "clicks with an unmapped area")


_SIGHTINGS = """
select split_part(sighting, ':', 3)::integer as "partition",
       split_part(sighting, ':', 4)::bigint as "offset"
from tripflow.quarantine_sightings
where sighting like 'kafka:%%' and split_part(sighting, ':', 2) = %(topic)s"""


@check("silver.quarantine_rate", "silver", "warn", QUARANTINE_RATE)
def quarantine_rate(scope: Scope, c: Check) -> list[Result]:
    """Share of a date's bronze records (by bronze's event_date) quarantined as bad."""
    bronze = lake_files(scope.settings, lake.BRONZE, scope.dates)
    if bronze is None:
        return [c.result(0, "no bronze table")]
    found = scope.conn.execute(_SIGHTINGS, {"topic": scope.settings.topic}).fetchall()
    bad = pa.table({"partition": pa.array([f[0] for f in found], pa.int32()),
                    "offset": pa.array([f[1] for f in found], pa.int64())})
    rates = _duck(rows=bronze, bad=bad).sql("""
        select r.event_date, count(b."offset"), count(*)
        from rows r left join (select distinct "partition", "offset" from bad) b
          on r."partition" = b."partition" and r."offset" = b."offset" and r.topic = $topic
        where r.event_date is not null
        group by 1 order by 1""", params={"topic": scope.settings.topic}).fetchall()
    return _rate_results(c, rates, "bronze records quarantined")


# -- gold (PostgreSQL cold marts) -------------------------------------------------------------
_PRIMARY_KEY = """
select a.attname, i.indisvalid and i.indisready from pg_index i
join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
where i.indrelid = to_regclass(%s) and i.indisprimary order by a.attnum"""


@check("gold.mart_keys_unique", "gold", "fail")
def mart_keys_unique(scope: Scope, c: Check) -> list[Result]:
    """Every cold mart's primary key (spec/marts.md) is unique over the dates, and the
    table still declares it."""
    from tripflow.marts.engine import mart_names

    where, params = scope.date_filter()
    problems = []
    for mart in mart_names():
        found = scope.conn.execute(_PRIMARY_KEY, (f"public.{mart}",)).fetchall()
        if not found:
            problems.append(f"{mart}: no primary key")
            continue
        if all(enforced for _, enforced in found):
            continue  # a valid primary-key index: PostgreSQL itself refuses a repeat
        key = [name for name, _ in found]
        columns = ", ".join(f'"{k}"' for k in key)
        repeated = scope.conn.execute(
            f"select count(*) from (select 1 from public.{mart} where {where} "
            f"group by {columns} having count(*) > 1) k", params).fetchone()[0]  # type: ignore[index]
        if repeated:
            problems.append(f"{mart}: {repeated:,} repeated keys")
    return [c.result(len(problems), "; ".join(problems) or
                     f"{len(mart_names())} marts, keys unique")]


@check("gold.daily_totals_match_silver", "gold", "fail")
def daily_totals_match_silver(scope: Scope, c: Check) -> list[Result]:
    """mart_daily_traffic.total_events = silver's rows of that date (rows counted in the
    files actually present), for every date either side holds."""
    where, params = scope.date_filter()
    mart = dict(scope.conn.execute(
        f"select event_date, total_events from public.mart_daily_traffic where {where}",
        params).fetchall())
    silver = {d: n for d, n in (scope.silver.rows if scope.silver else {}).items()
              if d is not None}
    days = sorted(set(mart) | set(silver))
    wrong = [d for d in days if mart.get(d) != silver.get(d, 0)]
    results = [c.result(len(wrong), f"{len(wrong)} of {len(days)} dates differ"
                        + (f": {_days(wrong)}" if wrong else ""))]
    results += [c.result(abs((mart.get(d) or 0) - silver.get(d, 0)),
                         f"mart {mart.get(d)}, silver {silver.get(d, 0)}", d) for d in wrong]
    return results


@check("gold.hourly_sums_match_daily", "gold", "fail")
def hourly_sums_match_daily(scope: Scope, c: Check) -> list[Result]:
    """sum(mart_hourly_traffic.clicks) of a date = mart_daily_traffic.total_events."""
    where, params = scope.date_filter("coalesce(d.event_date, h.event_date)")
    wrong = scope.conn.execute(f"""
        select coalesce(d.event_date, h.event_date), d.total_events, h.clicks
        from public.mart_daily_traffic d
        full join (select event_date, sum(clicks) as clicks from public.mart_hourly_traffic
                   group by 1) h on h.event_date = d.event_date
        where {where} and d.total_events is distinct from h.clicks
        order by 1""", params).fetchall()
    results = [c.result(len(wrong), f"{len(wrong)} dates differ"
                        + (f": {_days([w[0] for w in wrong])}" if wrong else ""))]
    results += [c.result(abs((daily or 0) - (hourly or 0)), f"daily {daily}, hourly {hourly}",
                         day) for day, daily, hourly in wrong]
    return results


_DRIFT = """
select distinct on (event_date) event_date, minutes_changed + minutes_deleted,
       minutes_in_silver + minutes_deleted
from tripflow.reconciliation
where {where} and minutes_in_hot > 0
order by event_date, reconciled_at desc"""


@check("gold.hot_cold_drift", "gold", "warn", DRIFT_RATE)
def hot_cold_drift(scope: Scope, c: Check) -> list[Result]:
    """Share of a date's minutes (silver's and the hot mart's) that the date's latest
    reconciliation rewrote: added, changed or deleted. Only dates the hot mart had when
    they were reconciled: a batch-only date (no hot minute) has nothing to compare."""
    where, params = scope.date_filter()
    rates = scope.conn.execute(_DRIFT.format(where=where), params).fetchall()
    return _rate_results(c, rates, "minutes rewritten")


# -- hot ------------------------------------------------------------------------------------
@check("hot.freshness", "hot", "warn")
def hot_freshness(scope: Scope, c: Check) -> list[Result]:
    """The hot path's last commit is within TRIPFLOW_FRESHNESS_SLA_SECONDS, or no record
    waits (an idle topic is no failure). A warning: waiting records are known only when the
    broker answers; when it does not, a stale commit is reported as failed."""
    sla = float(scope.settings.freshness_sla_seconds)
    age, = scope.conn.execute("select extract(epoch from now() - last_commit_at)::float8 "
                              "from tripflow.hot_state").fetchone()  # type: ignore[misc]
    base = replace(c, threshold=sla)
    if age is None:
        return [base.result(0, "the hot path never committed a batch", passed=True)]
    if age <= sla:
        return [base.result(round(age, 1), f"last commit {age:,.0f} s ago")]
    from tripflow.processing.stream_status import hot_status

    status = hot_status(scope.settings)
    if status.broker_error:
        return [base.result(round(age, 1), f"last commit {age:,.0f} s ago; records waiting "
                            f"unknown: {status.broker_error}", passed=False)]
    waiting = sum(max(p.lag or 0, 0) for p in status.partitions)
    return [base.result(round(age, 1), f"last commit {age:,.0f} s ago, {waiting:,} records "
                        "waiting", passed=waiting == 0)]
