"""The synthetic generator against its own ground truth and the real log's shape.

Everything is recounted here from the files, independently of the generator: lines are
read with the plain `json` module (not the project parser), bad lines are classified by
the rules of spec/tripclick-format.md "Bad input", and dedup keys are computed with
xxhash from the spec formula.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import xxhash

from tripflow.records.articles import read_articles
from tripflow.records.generate import Manifest, generate, tripclick_plan
from tripflow.records.parser import parse_batch
from tripflow.records.schema import Reason

REPOSITORY = Path(__file__).resolve().parents[2]
SRC = str(REPOSITORY / "src")
# The 34 real records beside the spec (outside the repository; optional).
SAMPLE = REPOSITORY.parent / "shared" / "data" / "tripclick_sample_2016-01-01.jsonl"
SAMPLE_KEYS = [
    "DateCreated", "SessionId", "DocumentId", "Url", "Title", "DOI", "ClinicalAreas",
    "Keywords", "Documents",
]  # fmt: skip
DATE_PATTERN = re.compile(r"/Date\((\d+)\)/")
SESSION_PATTERN = re.compile(r"[a-z0-5]{24}")
YEAR_2000_MS = 946_684_800_000
DAY_MS = 86_400_000
FIVE_MINUTES_MS = 300_000
DOCUMENTS_FROM = date(2017, 1, 1)

SMALL = {
    "start": date(2016, 12, 29),
    "days": 5,
    "seed": 7,
    "sessions_per_day": 400,
    "dup_rate": 0.02,
    "late_rate": 0.02,
    "bad_rate": 0.01,
    "bots": 4,
}


# -- an independent reader ---------------------------------------------------------------
def classify(raw: bytes, read_ms: int) -> str | None:
    """The quarantine reason of a raw line by the spec's rules, or None when valid."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.BAD_ENCODING.value
    body = text.strip().removeprefix("[").rstrip(",]")
    try:
        value = json.loads(body)
    except ValueError:
        return Reason.NOT_JSON.value
    if not isinstance(value, dict):
        return Reason.NOT_OBJECT.value
    stamp = value.get("DateCreated")
    match = DATE_PATTERN.fullmatch(stamp) if isinstance(stamp, str) else None
    if match is None:
        return Reason.BAD_DATE.value
    session = value.get("SessionId")
    if not isinstance(session, str) or not session:
        return Reason.NO_SESSION.value
    document = value.get("DocumentId")
    if not isinstance(document, int) or isinstance(document, bool):
        return Reason.BAD_DOCUMENT_ID.value
    ms = int(match[1])
    if ms < YEAR_2000_MS:
        return Reason.TOO_OLD.value
    if ms > read_ms + DAY_MS:
        return Reason.IN_FUTURE.value
    return None


def spec_dedup_key(session: str, document: int, ms: int) -> str:
    return xxhash.xxh64(f"{session}|{document}|{ms}".encode()).hexdigest()


def event_date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


@dataclass
class Click:
    ms: int
    record: dict
    raw: bytes
    file_date: date


@dataclass
class Recount:
    """What the files hold, counted from scratch."""

    clicks: list[Click] = field(default_factory=list)  # distinct, first copies, file order
    lines: Counter = field(default_factory=Counter)  # file date -> lines
    duplicates: Counter = field(default_factory=Counter)
    duplicates_same_file: int = 0
    duplicates_next_file: int = 0
    late: Counter = field(default_factory=Counter)
    bad: dict = field(default_factory=lambda: defaultdict(Counter))  # date -> reason -> n
    file_dates: list[date] = field(default_factory=list)


def recount(out_dir: Path) -> Recount:
    result = Recount()
    first_copy: dict[str, tuple[bytes, date]] = {}
    read_ms = int(time.time() * 1000)
    day_files = sorted(out_dir.glob("????-??-??.json"))
    result.file_dates = [date.fromisoformat(path.stem) for path in day_files]
    last_file = result.file_dates[-1]
    for path, file_date in zip(day_files, result.file_dates, strict=True):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n")
        assert b"\r" not in data
        for raw in data.split(b"\n")[:-1]:
            result.lines[file_date] += 1
            reason = classify(raw, read_ms)
            if reason is not None:
                result.bad[file_date][reason] += 1
                continue
            record = json.loads(raw)
            ms = int(DATE_PATTERN.fullmatch(record["DateCreated"])[1])
            key = spec_dedup_key(record["SessionId"], record["DocumentId"], ms)
            if key in first_copy:
                original, original_file = first_copy[key]
                assert raw == original, "a repeated key must be a byte-identical duplicate"
                result.duplicates[file_date] += 1
                if original_file == file_date:
                    result.duplicates_same_file += 1
                else:
                    assert original_file == file_date - timedelta(days=1)
                    result.duplicates_next_file += 1
                continue
            first_copy[key] = (raw, file_date)
            day = event_date(ms)
            if day < file_date:
                result.late[file_date] += 1
                assert (file_date - day).days <= 3 or file_date == last_file
            else:
                assert day == file_date, "an on-time click sits in its own day's file"
            result.clicks.append(Click(ms, record, raw, file_date))
    return result


def read_catalogue(path: Path) -> dict[int, tuple[str, str]]:
    """allarticles.txt by the spec: a record starts with `<int>\\t`; else it continues."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "id\ttitle\turl"
    assert lines[-1] == ""
    footer = re.fullmatch(r"\((\d+) rows affected\)", lines[-2])
    assert footer is not None
    records: list[str] = []
    for line in lines[1:-2]:
        if re.match(r"\d+\t", line):
            records.append(line)
        else:
            records[-1] += "\n" + line
    catalogue = {}
    for record in records:
        doc_id, rest = record.split("\t", 1)
        title, url = rest.rsplit("\t", 1)
        catalogue[int(doc_id)] = (title, url)
    assert len(catalogue) == len(records) == int(footer[1])
    return catalogue


def sha256_of_files(out_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.iterdir())}


# -- runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, list]:
    out = tmp_path_factory.mktemp("small")
    calls: list[tuple[date, int]] = []
    manifest = generate(out, progress=lambda day, lines: calls.append((day, lines)), **SMALL)
    return out, manifest, calls


@pytest.fixture(scope="module")
def small_recount(small: tuple[Path, Manifest, list]) -> Recount:
    return recount(small[0])


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, Recount]:
    """30 days × 2000 sessions across the 2017 boundary, with a few bots."""
    out = tmp_path_factory.mktemp("month")
    manifest = generate(out, start=date(2016, 12, 12), days=30, sessions_per_day=2000, bots=3)
    return out, manifest, recount(out)


# -- determinism -------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    small: tuple[Path, Manifest, list], tmp_path: Path
) -> None:
    first = sha256_of_files(small[0])
    # Again in a fresh interpreter with another string-hash seed: no dependence on set
    # or dict-of-str ordering, wall clock or process state.
    script = (
        "import sys, datetime; from tripflow.records.generate import generate; "
        f"generate(sys.argv[1], **{SMALL!r})"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": SRC}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "again")], check=True, env=environment
    )
    assert sha256_of_files(tmp_path / "again") == first
    generate(tmp_path / "other", **{**SMALL, "seed": 8})
    other = sha256_of_files(tmp_path / "other")
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first)


# -- the manifest is the truth -----------------------------------------------------------
def test_manifest_matches_an_independent_recount(
    small: tuple[Path, Manifest, list], small_recount: Recount
) -> None:
    out, manifest, _ = small
    counted = small_recount
    assert Manifest.read(out) == manifest
    expected_days = [SMALL["start"] + timedelta(days=i) for i in range(SMALL["days"])]
    assert counted.file_dates == expected_days
    assert list(manifest.days) == [d.isoformat() for d in expected_days]

    by_date: dict[date, list[Click]] = defaultdict(list)
    for click in counted.clicks:
        by_date[event_date(click.ms)].append(click)
    bot_ids = {bot.session_id for bot in manifest.bots}
    for day in expected_days:
        truth = manifest.days[day.isoformat()]
        clicks = by_date[day]
        assert truth.clicks == len(clicks)
        assert truth.sessions == len({c.record["SessionId"] for c in clicks})
        assert truth.documents == len({c.record["DocumentId"] for c in clicks})
        assert truth.bot_sessions == len({c.record["SessionId"] for c in clicks} & bot_ids)
        assert truth.lines == counted.lines[day]
        assert truth.duplicates == counted.duplicates[day]
        assert truth.late == counted.late[day]
        assert truth.bad == {r.value: counted.bad[day][r.value] for r in Reason}

    totals = manifest.totals
    assert totals.lines == sum(counted.lines.values())
    assert totals.clicks == len(counted.clicks)
    assert totals.sessions == len({c.record["SessionId"] for c in counted.clicks})
    assert totals.documents == len({c.record["DocumentId"] for c in counted.clicks})
    assert totals.duplicates == sum(counted.duplicates.values())
    assert totals.late == sum(counted.late.values())
    assert totals.bad == {r.value: sum(c[r.value] for c in counted.bad.values()) for r in Reason}
    assert totals.bots == len(manifest.bots) == SMALL["bots"]
    # Every line is exactly one kind.
    assert totals.lines == totals.clicks + totals.duplicates + sum(totals.bad.values())


def test_injections_happen_at_about_the_requested_rates(
    small: tuple[Path, Manifest, list], small_recount: Recount
) -> None:
    totals = small[1].totals
    assert 0.01 < totals.duplicates / totals.clicks < 0.03
    assert 0.01 < totals.late / totals.clicks < 0.03
    assert 0.005 < sum(totals.bad.values()) / totals.clicks < 0.015
    assert small_recount.duplicates_same_file > 0
    assert small_recount.duplicates_next_file > 0
    # Every reason occurs, spread evenly (a cycle: counts differ by at most one).
    assert min(totals.bad.values()) >= 1
    assert max(totals.bad.values()) - min(totals.bad.values()) <= 1


def test_bad_lines_break_exactly_the_intended_rule(small: tuple[Path, Manifest, list]) -> None:
    """in_future stays in the future for decades; too_old is a 1999 date."""
    out = small[0]
    far_read_ms = int(datetime(2090, 1, 1, tzinfo=UTC).timestamp() * 1000)
    reasons_now, reasons_2090 = Counter(), Counter()
    for path in sorted(out.glob("????-??-??.json")):
        for raw in path.read_bytes().split(b"\n")[:-1]:
            reasons_now[classify(raw, int(time.time() * 1000))] += 1
            reasons_2090[classify(raw, far_read_ms)] += 1
            if classify(raw, far_read_ms) == Reason.TOO_OLD.value:
                ms = int(DATE_PATTERN.fullmatch(json.loads(raw)["DateCreated"])[1])
                assert event_date(ms).year == 1999
    assert reasons_now == reasons_2090


def test_progress_reports_each_day_file(small: tuple[Path, Manifest, list]) -> None:
    _, manifest, calls = small
    assert [(day.isoformat(), lines) for day, lines in calls] == [
        (day, truth.lines) for day, truth in manifest.days.items()
    ]


# -- record format -----------------------------------------------------------------------
def test_records_are_byte_compatible_with_the_real_log(small_recount: Recount) -> None:
    if SAMPLE.exists():
        sample = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
        assert all(list(record) == SAMPLE_KEYS for record in sample)
        assert all(
            json.dumps(r, ensure_ascii=False) == line
            for r, line in zip(sample, SAMPLE.read_text(encoding="utf-8").splitlines(), strict=True)
        )
    # Non-ASCII text is written as UTF-8, not \\u escapes, like the real file.
    assert any(max(click.raw) > 127 for click in small_recount.clicks)
    for click in small_recount.clicks:
        assert list(click.record) == SAMPLE_KEYS
        # Re-serialising with json.dumps' defaults gives the same bytes: same separators,
        # key order, escaping and UTF-8 text as the real file.
        assert json.dumps(click.record, ensure_ascii=False).encode() == click.raw
        assert SESSION_PATTERN.fullmatch(click.record["SessionId"])
        assert isinstance(click.record["DocumentId"], int)
        assert all(isinstance(click.record[k], str) for k in SAMPLE_KEYS[3:8])


def test_documents_lists_follow_the_2017_switch(month: tuple[Path, Manifest, Recount]) -> None:
    clicks = month[2].clicks
    before = [c for c in clicks if event_date(c.ms) < DOCUMENTS_FROM]
    after = [c for c in clicks if event_date(c.ms) >= DOCUMENTS_FROM]
    assert before and after
    assert all(c.record["Documents"] == [] for c in before)
    for c in after:
        ids = c.record["Documents"]
        assert len(ids) == len(set(ids)) == 20
        assert all(type(i) is int for i in ids)
    with_clicked = sum(c.record["DocumentId"] in c.record["Documents"] for c in after)
    assert 0.8 < with_clicked / len(after) < 1.0  # usually, not always


# -- realism -----------------------------------------------------------------------------
def test_sessions_look_like_the_real_log(month: tuple[Path, Manifest, Recount]) -> None:
    _, manifest, counted = month
    bot_ids = {bot.session_id for bot in manifest.bots}
    sizes = Counter(
        c.record["SessionId"] for c in counted.clicks if c.record["SessionId"] not in bot_ids
    )
    per_session = np.array(list(sizes.values()))
    assert 3.0 <= per_session.mean() <= 3.6
    assert 0.35 <= (per_session == 1).mean() <= 0.45
    assert 25 <= per_session.max() < 50  # dozens, never bot-like
    # Some sessions cross midnight: their clicks sit in two day files.
    days_of_session = defaultdict(set)
    for c in counted.clicks:
        days_of_session[c.record["SessionId"]].add(event_date(c.ms))
    assert 0 < sum(len(days) == 2 for days in days_of_session.values()) < 0.01 * len(sizes)
    # Clicks within a session are seconds to minutes apart.
    times = defaultdict(list)
    for c in counted.clicks:
        if c.record["SessionId"] not in bot_ids:
            times[c.record["SessionId"]].append(c.ms)
    gaps = np.concatenate([np.diff(sorted(ms)) for ms in times.values() if len(ms) > 1])
    assert gaps.min() >= 1_000
    assert gaps.max() <= 600_000
    assert 20_000 < np.median(gaps) < 120_000


def test_fields_have_the_real_shares_and_limits(month: tuple[Path, Manifest, Recount]) -> None:
    records = [c.record for c in month[2].clicks]
    empty_areas = np.mean([r["ClinicalAreas"] == "" for r in records])
    empty_keywords = np.mean([r["Keywords"] == "" for r in records])
    assert abs(empty_areas - 0.12) <= 0.03
    assert abs(empty_keywords - 0.13) <= 0.03
    assert max(len(r["Title"]) for r in records) == 255  # cut, and some long ones hit it
    assert max(len(r["Keywords"]) for r in records) == 100
    assert any(r["Title"] == "" for r in records)
    assert any(r["Keywords"].endswith(" ") for r in records)
    for syntax in ("title:", 'area:"', " AND ", " OR ", " NOT ", ")(", "*", "from:", "to:", "tag:"):
        assert any(syntax in r["Keywords"] for r in records), syntax
    assert 0.05 < np.mean([r["DOI"].startswith("10.") for r in records]) < 0.6
    assert all(r["DOI"] == "" or r["DOI"].startswith("10.") for r in records)

    areas = [r["ClinicalAreas"] for r in records if r["ClinicalAreas"]]
    assert 0.7 < np.mean([a.startswith(",") for a in areas]) < 0.95
    names = [name for a in areas for name in a.split(",") if name]
    for variant in ("neurology", "obgyn", "emergencymedicine", "infectiousdisease"):
        assert variant in names, variant
    for slug in ("sports_medicine", "preventive_medicine", "public_health", "epidemiology"):
        assert slug in names, slug

    def folded(name: str) -> str:
        return re.sub("[^a-z]", "", name.lower())

    # Some record names one area twice in different spellings ("Neurology,neurology").
    assert any(
        len({folded(n) for n in a.split(",") if n}) < len([n for n in a.split(",") if n])
        for a in areas
    )
    # A few areas dominate.
    top = Counter(names).most_common()
    assert top[0][1] > 5 * top[-1][1]


def test_a_document_keeps_its_areas_url_and_doi(month: tuple[Path, Manifest, Recount]) -> None:
    seen: dict[int, tuple[str, str, str]] = {}
    for c in month[2].clicks:
        r = c.record
        attributes = (r["ClinicalAreas"], r["Url"], r["DOI"])
        assert seen.setdefault(r["DocumentId"], attributes) == attributes


def test_document_popularity_is_heavy_tailed(month: tuple[Path, Manifest, Recount]) -> None:
    views_by_document = Counter(c.record["DocumentId"] for c in month[2].clicks)
    views = np.sort(np.array(list(views_by_document.values())))[::-1]
    top_percent = views[: max(1, len(views) // 100)].sum() / views.sum()
    assert top_percent >= 0.20
    assert views[0] / views.sum() < 0.02  # no single document swamps the log
    ids = np.array(list(views_by_document))
    assert ids.min() >= 100_000
    assert ids.max() < 10_000_000


def test_daily_and_weekly_rhythm(month: tuple[Path, Manifest, Recount]) -> None:
    """Night hours (00–05 UTC) get under half the clicks per hour of 10–16 UTC; weekend
    days get under 85 % of the clicks of weekdays."""
    _, manifest, counted = month
    hours = Counter(datetime.fromtimestamp(c.ms / 1000, UTC).hour for c in counted.clicks)
    night = sum(hours[h] for h in range(0, 6)) / 6
    day = sum(hours[h] for h in range(10, 17)) / 7
    assert night < 0.5 * day
    weekend = [t.clicks for d, t in manifest.days.items() if date.fromisoformat(d).weekday() >= 5]
    weekday = [t.clicks for d, t in manifest.days.items() if date.fromisoformat(d).weekday() < 5]
    assert np.mean(weekend) < 0.85 * np.mean(weekday)


# -- bots --------------------------------------------------------------------------------
def test_bot_sessions_trip_the_five_minute_rule(month: tuple[Path, Manifest, Recount]) -> None:
    _, manifest, counted = month
    times: dict[str, list[int]] = defaultdict(list)
    for c in counted.clicks:
        times[c.record["SessionId"]].append(c.ms)
    bot_ids = {bot.session_id for bot in manifest.bots}
    assert len({bot.date for bot in manifest.bots}) == len(manifest.bots) == 3  # spread out
    sliding_maxima, split_by_the_clock = [], []
    for bot in manifest.bots:
        ms = np.array(sorted(times[bot.session_id]))
        assert bot.clicks == len(ms)
        assert 60 <= len(ms) <= 300
        assert ms[-1] - ms[0] <= 10 * 60_000
        assert (bot.first_ms, bot.last_ms) == (ms[0], ms[-1])
        # n(t) = clicks in (t - 5 min, t], at each click t.
        inside = np.arange(len(ms)) - np.searchsorted(ms, ms - FIVE_MINUTES_MS, side="right") + 1
        assert bot.max_clicks_5min == inside.max()
        assert inside.max() >= 50
        sliding_maxima.append(inside.max())
        # Fixed 5-minute clock buckets: a burst over a boundary is split between two.
        buckets = Counter((ms // FIVE_MINUTES_MS).tolist())
        split_by_the_clock.append(len(buckets) > 1 and max(buckets.values()) < 50)
    assert max(sliding_maxima) >= 100  # CRITICAL
    assert min(sliding_maxima) < 100  # WARNING
    # Some burst fires the sliding rule although no clock bucket holds 50 of its clicks.
    assert any(split_by_the_clock)
    # Nobody else gets near the rule.
    assert all(len(ms) < 50 for session, ms in times.items() if session not in bot_ids)


# -- the catalogue -----------------------------------------------------------------------
def test_catalogue_covers_every_id_and_has_the_real_quirks(
    month: tuple[Path, Manifest, Recount],
) -> None:
    out, manifest, counted = month
    catalogue = read_catalogue(out / "allarticles.txt")
    assert len(catalogue) == manifest.params["documents"]
    mentioned = {c.record["DocumentId"] for c in counted.clicks}
    mentioned |= {i for c in counted.clicks for i in c.record["Documents"]}
    assert mentioned <= catalogue.keys()
    titles = [title for title, _ in catalogue.values()]
    urls = [url for _, url in catalogue.values()]
    assert any("\t" in t for t in titles) and any("\n" in t for t in titles)
    assert any(len(t) > 255 for t in titles)
    for prefix in ("_http", "ttp://", "file:///"):
        assert any(u.startswith(prefix) for u in urls), prefix
    assert "" in urls

    # Click titles: the catalogue title cut at 255, else empty, else an older title.
    titles_by_document_day: dict[tuple[int, date], set[str]] = defaultdict(set)
    changed = 0
    for c in counted.clicks:
        r = c.record
        full_title, url = catalogue[r["DocumentId"]]
        assert r["Url"] == url
        if r["Title"] and r["Title"] != full_title[:255]:
            changed += 1
        titles_by_document_day[(r["DocumentId"], event_date(c.ms))].add(r["Title"])
    assert 0 < changed < 0.05 * len(counted.clicks)
    # Some document shows two different non-empty titles on one day: "latest click" matters.
    assert any(len(titles - {""}) > 1 for titles in titles_by_document_day.values())


def test_catalogue_reads_back_through_the_articles_module(
    small: tuple[Path, Manifest, list],
) -> None:
    out = small[0]
    table = read_articles(out / "allarticles.txt")
    expected = read_catalogue(out / "allarticles.txt")
    assert table.num_rows == len(expected)
    read_back = zip(
        table["document_id"].to_pylist(),
        table["title"].to_pylist(),
        table["url"].to_pylist(),
        strict=True,
    )
    # The articles module reads a missing url as null.
    assert {doc: (title, url or "") for doc, title, url in read_back} == expected


def test_the_project_parser_agrees_with_the_truth(
    small: tuple[Path, Manifest, list], small_recount: Recount
) -> None:
    """Cross-check: every bad line gets its intended reason from the real parser too."""
    out, manifest, _ = small
    values = [
        raw
        for path in sorted(out.glob("????-??-??.json"))
        for raw in path.read_bytes().split(b"\n")[:-1]
    ]
    parsed = parse_batch(values)
    clicks, quarantine = parsed.clicks, parsed.quarantine
    reasons = Counter(quarantine["reason"].to_pylist())
    assert {r.value: reasons[r.value] for r in Reason} == manifest.totals.bad
    assert sum(reasons.values()) == sum(manifest.totals.bad.values())
    assert clicks.num_rows == manifest.totals.clicks + manifest.totals.duplicates
    expected_keys = {
        spec_dedup_key(c.record["SessionId"], c.record["DocumentId"], c.ms)
        for c in small_recount.clicks
    }
    assert set(clicks["dedup_key"].to_pylist()) == expected_keys


# -- the preset --------------------------------------------------------------------------
def test_tripclick_preset_plan_has_the_real_scale_and_growth() -> None:
    plan = tripclick_plan(42)
    assert plan.start == date(2013, 1, 1)
    assert plan.days == (date(2020, 10, 28) - date(2013, 1, 1)).days + 1
    assert abs(plan.sessions_by_day.sum() - 1_602_648) < 0.001 * 1_602_648
    assert plan.catalogue_size == 2_347_977
    per_year = Counter()
    for i, sessions in enumerate(plan.sessions_by_day.tolist()):
        per_year[(plan.start + timedelta(days=i)).year] += sessions
    sizes = {2013: 56, 2014: 62, 2015: 61, 2016: 91, 2017: 103, 2018: 115, 2019: 103, 2020: 77}
    for year, size in sizes.items():
        share = per_year[year] / plan.sessions_by_day.sum()
        assert share == pytest.approx(size / sum(sizes.values()), rel=0.02)
    months = 12 * 7 + 10
    assert len(plan.bot_days) == 3 * months
    assert 0 < plan.dup_rate < 0.01 and 0 < plan.late_rate < 0.01 and 0 < plan.bad_rate < 0.001


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        generate(tmp_path, start=date(2016, 1, 1), days=0)
    with pytest.raises(ValueError, match="dup_rate"):
        generate(tmp_path, start=date(2016, 1, 1), days=1, dup_rate=1.5)
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, start=date(2016, 1, 1), days=1, seed=-1)
    assert not any(tmp_path.iterdir())
