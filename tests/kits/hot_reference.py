"""The hot marts computed independently, in plain Python, from the raw lines (the spec read
literally: spec/tripclick-format.md for validity, identity and areas; spec/marts.md for the
marts). Tests compare the stream worker's tables with these values."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import xxhash

from tests.spec_records import spec_record

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
FIVE_MIN_MS = 300_000


@dataclass(frozen=True)
class Click:
    key: str
    ms: int
    session: str
    document: int
    title: str | None
    areas: frozenset[str]


def parse_line(line: bytes, read_ms: int) -> Click | None:
    """A click, or None when the spec says quarantine."""
    record = spec_record(line, read_ms)
    if record is None:
        return None
    key = xxhash.xxh64(f"{record.session}|{record.document}|{record.ms}".encode()).hexdigest()
    return Click(key, record.ms, record.session, record.document, record.title, record.areas)


def distinct_clicks(lines: list[bytes], read_ms: int) -> tuple[dict[str, Click], int]:
    """(first copy of every click by key, number of bad lines)."""
    clicks: dict[str, Click] = {}
    bad = 0
    for line in lines:
        click = parse_line(line, read_ms)
        if click is None:
            bad += 1
        else:
            clicks.setdefault(click.key, click)
    return clicks, bad


def ts(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def traffic_minutes(clicks: list[Click]) -> dict[datetime, tuple[int, int, int]]:
    by_minute: dict[int, list[Click]] = defaultdict(list)
    for c in clicks:
        by_minute[c.ms - c.ms % MINUTE_MS].append(c)
    return {ts(m): (len(cs), len({c.session for c in cs}), len({c.document for c in cs}))
            for m, cs in by_minute.items()}


def top_docs(clicks: list[Click], clock_ms: int) -> list[tuple[int, int, str | None, int, int]]:
    """[(rank, document, title, clicks, sessions)] for the window (clock - 1 h, clock]."""
    window = [c for c in clicks if clock_ms - HOUR_MS < c.ms <= clock_ms]
    by_doc: dict[int, list[Click]] = defaultdict(list)
    for c in window:
        by_doc[c.document].append(c)
    ranked = sorted(by_doc.items(),
                    key=lambda kv: (-len(kv[1]), -len({c.session for c in kv[1]}), kv[0]))
    result = []
    for rank, (doc, cs) in enumerate(ranked[:20], start=1):
        titled = [c for c in cs if c.title]
        latest = max(titled, key=lambda c: (c.ms, c.key)) if titled else None
        result.append((rank, doc, latest.title if latest else None, len(cs),
                       len({c.session for c in cs})))
    return result


Trend = dict[str, tuple[int, int, Decimal | None]]
Episodes = dict[tuple[datetime, str], tuple[datetime, datetime, int, str]]


def clinical_trend(clicks: list[Click], clock_ms: int) -> Trend:
    cur: dict[str, list[Click]] = defaultdict(list)
    prev: dict[str, int] = defaultdict(int)
    for c in clicks:
        for area in c.areas:
            if clock_ms - 24 * HOUR_MS < c.ms <= clock_ms:
                cur[area].append(c)
            elif clock_ms - 48 * HOUR_MS < c.ms <= clock_ms - 24 * HOUR_MS:
                prev[area] += 1
    result = {}
    for area, cs in cur.items():
        p = prev[area]
        pct = (Decimal(100 * (len(cs) - p)) / Decimal(p)).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP) if p else None
        result[area] = (len(cs), len({c.session for c in cs}), pct)
    return result


def episodes(clicks: list[Click]) -> Episodes:
    """{(detected_ts, session): (window_start, window_end, click_count, severity)}."""
    by_session: dict[str, list[int]] = defaultdict(list)
    for c in clicks:
        by_session[c.session].append(c.ms)
    result = {}
    for session, times in by_session.items():
        if len(times) < 50:
            continue
        times.sort()
        current: list[int] | None = None  # [detected, last, max n]
        for t in times:
            n = bisect.bisect_right(times, t) - bisect.bisect_right(times, t - FIVE_MIN_MS)
            if n >= 50:
                if current is None:
                    current = [t, t, n]
                else:
                    current[1], current[2] = t, max(current[2], n)
            elif current is not None:
                _store(result, session, current)
                current = None
        if current is not None:
            _store(result, session, current)
    return result


def _store(result: dict, session: str, episode: list[int]) -> None:
    detected, last, n = episode
    result[(ts(detected), session)] = (ts(detected - FIVE_MIN_MS), ts(last), n,
                                       "CRITICAL" if n >= 100 else "WARNING")
