"""The day loop: sessions, bots, late and duplicate lines, bad lines, day files, truth.

Memory stays bounded by a few days: a day's clicks are built, split by event date (a
session crossing midnight hands its later clicks to the next day), written, and only
small carry-overs (spilled clicks, late lines for D+1..D+3, next-day duplicates) live on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from json.encoder import encode_basestring  # json.dumps(str, ensure_ascii=False)
from pathlib import Path

import numpy as np

from tripflow.records.articles import ARTICLES_FILE_NAME, write_articles
from tripflow.records.generate.bad_lines import bad_line
from tripflow.records.generate.catalogue import TITLE_LIMIT, Catalogue
from tripflow.records.generate.hashing import stream_key, stream_rng, unique_60bit
from tripflow.records.generate.keywords import build_queries
from tripflow.records.generate.manifest import BotTruth, DayTruth, Manifest, Totals
from tripflow.records.rules import MS_PER_HOUR, MS_PER_MINUTE
from tripflow.records.rules import ONE_DAY_MS as MS_PER_DAY
from tripflow.records.schema import Reason

FIVE_MINUTES_MS = 5 * MS_PER_MINUTE

# `Documents` holds the top-20 retrieved ids from 2017 on; earlier records have [].
DOCUMENTS_LIST_FROM = date(2017, 1, 1)
DOCUMENTS_PER_LIST = 20

# Session sizes: 40 % single clicks, else 2 + a mixture of two geometric tails (mean
# 1.5 and 8.2), capped below 50 so that only bots reach the 50-clicks-in-5-minutes rule.
# Mean ≈ 3.30 clicks per session, like the real log.
_SINGLE_CLICK_SHARE = 0.40
_HEAVY_TAIL_SHARE = 0.20
_LIGHT_TAIL_MEAN = 1.5
_HEAVY_TAIL_MEAN = 8.2
_MAX_SESSION_CLICKS = 49

# Gaps between a session's clicks: log-normal, median 45 s, from 1 s to 10 min
# (so a session spans at most 8 h and spills at most into the next day).
_GAP_MEDIAN_MS = 45_000
_GAP_SIGMA = 1.1
_GAP_RANGE_MS = (1_000, 600_000)

_REFINED_QUERY_SHARE = 0.15  # sessions whose query changes part-way
_EMPTY_TITLE_SHARE = 0.004  # clicks logged without a title
_CLICKED_IN_LIST_SHARE = 0.9  # query segments whose clicked documents are in Documents
_FILLER_DRAWS = 28  # popular ids drawn per results list (repeats are skipped)

# Clicks per UTC hour (relative): Trip's users are mostly in Europe and the Americas.
_HOURLY_WEIGHTS = np.array(
    [0.45, 0.35, 0.30, 0.28, 0.30, 0.40, 0.60, 0.85, 1.05, 1.20, 1.25, 1.25,
     1.25, 1.30, 1.35, 1.35, 1.25, 1.10, 0.95, 0.90, 0.85, 0.80, 0.70, 0.55]
)  # fmt: skip
_HOURLY_P = _HOURLY_WEIGHTS / _HOURLY_WEIGHTS.sum()
# Monday..Sunday, normalised to a mean of 1 so sessions_per_day is the weekly average.
_WEEKDAY_WEIGHTS = np.array([1.10, 1.12, 1.10, 1.08, 1.00, 0.78, 0.82])
_WEEKDAY_WEIGHTS = _WEEKDAY_WEIGHTS / _WEEKDAY_WEIGHTS.mean()
_DAY_NOISE_SIGMA = 0.05

# Bots: 60–300 clicks, at most 4 s apart on average (so any 50 consecutive clicks fall
# inside 5 minutes), whole burst under 10 minutes.
_BOT_CLICKS = (60, 300)
_BOT_MAX_MEAN_GAP_MS = 4_000
_BOT_TARGET_SPAN_MS = (90_000, 390_000)

_SESSION_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz012345", dtype=np.uint8)
_REASONS = tuple(Reason)

# Independent random streams per purpose (see `hashing.stream_rng`); the catalogue
# uses stream 1.
_STREAM_PLAN, _STREAM_DAY, _STREAM_SESSION_IDS, _STREAM_ORDERS, _STREAM_REASONS = 0, 2, 3, 4, 5

ProgressCallback = Callable[[date, int], None]


@dataclass(frozen=True)
class RunPlan:
    """Everything that fixes a run's output, decided before the first day is built."""

    start: date
    sessions_by_day: np.ndarray  # sessions starting on each day
    bot_days: np.ndarray  # day index of each bot session, sorted
    seed: int
    dup_rate: float
    late_rate: float
    bad_rate: float
    catalogue_size: int
    params: dict[str, object]

    @property
    def days(self) -> int:
        return len(self.sessions_by_day)


def epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def plan_rng(seed: int) -> np.random.Generator:
    """The stream that decides day sizes and bot days."""
    return stream_rng(seed, _STREAM_PLAN)


def daily_factors(rng: np.random.Generator, start: date, days: int) -> np.ndarray:
    """Weekly rhythm times a little day-to-day noise."""
    weekdays = np.array([(start + timedelta(days=i)).weekday() for i in range(days)])
    return _WEEKDAY_WEIGHTS[weekdays] * np.exp(rng.normal(0.0, _DAY_NOISE_SIGMA, days))


def spread_bots(rng: np.random.Generator, bots: int, days: int) -> np.ndarray:
    """Day index per bot: one per equal slice of the range, at a random day in it."""
    slots = (np.arange(bots) + rng.random(bots)) * days / max(bots, 1)
    return np.minimum(slots.astype(np.int64), days - 1)


# -- click batches ----------------------------------------------------------------------
@dataclass
class _Clicks:
    """Valid clicks, one finished JSON line each."""

    ms: np.ndarray  # event time (int64)
    session: np.ndarray  # global session number (int64)
    rank: np.ndarray  # document popularity rank (int64)
    lines: list[str]

    @staticmethod
    def empty() -> _Clicks:
        none = np.zeros(0, dtype=np.int64)
        return _Clicks(none, none, none, [])

    @staticmethod
    def concat(parts: list[_Clicks]) -> _Clicks:
        return _Clicks(
            np.concatenate([p.ms for p in parts]),
            np.concatenate([p.session for p in parts]),
            np.concatenate([p.rank for p in parts]),
            [line for p in parts for line in p.lines],
        )

    def take(self, index: np.ndarray) -> _Clicks:
        return _Clicks(
            self.ms[index], self.session[index], self.rank[index],
            [self.lines[i] for i in index.tolist()],
        )  # fmt: skip


class _LineBuilder:
    """Formats click records byte-compatibly with the real log (json.dumps layout)."""

    def __init__(self, catalogue: Catalogue, seed: int) -> None:
        self.catalogue = catalogue
        self._documents_from_ms = epoch_ms(DOCUMENTS_LIST_FROM)
        self._session_key = stream_key(seed, _STREAM_SESSION_IDS)
        # Orders of the 20 ids in a results list, drawn once and reused (cheap shuffles).
        permutations_rng = stream_rng(seed, _STREAM_ORDERS)
        self._orders = [
            permutations_rng.permutation(DOCUMENTS_PER_LIST).tolist() for _ in range(512)
        ]

    def session_ids(self, rng: np.random.Generator, numbers: np.ndarray) -> list[str]:
        """24 chars of [a-z0-5]: 60 random bits, then 60 bits unique to the session number."""
        random_half = rng.integers(0, 1 << 60, size=len(numbers), dtype=np.uint64)
        unique_half = unique_60bit(self._session_key, numbers)
        shifts = np.arange(0, 60, 5, dtype=np.uint64)[None, :]
        chars = np.concatenate(
            [(random_half[:, None] >> shifts) & 31, (unique_half[:, None] >> shifts) & 31], axis=1
        )
        letters = _SESSION_ALPHABET[chars.astype(np.intp)]
        return np.ascontiguousarray(letters).view("S24").ravel().astype("U24").tolist()

    def documents_lists(
        self, rng: np.random.Generator, clicked_ids: list[list[int]]
    ) -> list[list[int]]:
        """Top-20 results per query segment: 20 distinct ids, usually with the clicked ones."""
        count = len(clicked_ids)
        if count == 0:
            return []
        catalogue = self.catalogue
        filler = catalogue.ids(catalogue.sample_popular(rng, count * _FILLER_DRAWS))
        filler_rows = filler.reshape(count, _FILLER_DRAWS).tolist()
        include_clicked = (rng.random(count) < _CLICKED_IN_LIST_SHARE).tolist()
        order_index = rng.integers(0, len(self._orders), size=count).tolist()
        lists = []
        for clicked, extra, include, order in zip(
            clicked_ids, filler_rows, include_clicked, order_index, strict=True
        ):
            # Clicked ids first (in click order), then popular filler; no repeats.
            chosen = list(dict.fromkeys(clicked + extra if include else extra))
            rank = 0
            while len(chosen) < DOCUMENTS_PER_LIST:  # unlucky draws: walk the ranks
                doc_id = int(catalogue.ids(np.array([rank]))[0])
                if doc_id not in chosen:
                    chosen.append(doc_id)
                rank += 1
            lists.append([chosen[i] for i in self._orders[order]])
        return lists

    def click_lines(
        self,
        rng: np.random.Generator,
        ms: np.ndarray,
        session_ids: list[str],
        session_of_click: np.ndarray,
        ranks: np.ndarray,
        segment_of_click: np.ndarray,
        segment_queries: list[str],
    ) -> list[str]:
        """One JSON line per click. Segments are runs of clicks sharing one query."""
        boundaries = np.flatnonzero(np.diff(segment_of_click)) + 1
        starts = np.concatenate([[0], boundaries]).astype(np.int64)
        ends = np.concatenate([boundaries, [len(ms)]]).astype(np.int64)
        segment_ids = segment_of_click[starts].tolist()
        # Only segments with a click from 2017 on need a results list.
        needs_list = np.maximum.reduceat(ms, starts) >= self._documents_from_ms
        list_segments = [i for i, needed in enumerate(needs_list) if needed]
        clicked_ids = self.catalogue.ids(ranks).tolist()
        bounds = list(zip(starts.tolist(), ends.tolist(), strict=True))
        lists = self.documents_lists(
            rng, [clicked_ids[bounds[i][0] : bounds[i][1]] for i in list_segments]
        )
        documents_by_segment = dict.fromkeys(segment_ids, "[]")
        for i, ids in zip(list_segments, lists, strict=True):
            documents_by_segment[segment_ids[i]] = "[" + ", ".join(map(str, ids)) + "]"
        keywords_by_segment = {s: encode_basestring(segment_queries[s]) for s in segment_ids}
        pieces = self.catalogue.json_pieces(ranks)
        empty_title = (rng.random(len(ms)) < _EMPTY_TITLE_SHARE).tolist()
        documents_from = self._documents_from_ms
        lines = []
        for click_ms, session, rank, segment, untitled in zip(
            ms.tolist(), session_of_click.tolist(), ranks.tolist(),
            segment_of_click.tolist(), empty_title, strict=True,
        ):  # fmt: skip
            doc = pieces[rank]
            if untitled:
                title = '""'
            elif doc.old_title is not None and click_ms < doc.title_changed_ms:
                title = doc.old_title
            else:
                title = doc.title
            documents = documents_by_segment[segment] if click_ms >= documents_from else "[]"
            lines.append(
                f'{{"DateCreated": "/Date({click_ms})/", "SessionId": "{session_ids[session]}", '
                f'{doc.head}, "Title": {title}, {doc.tail}, '
                f'"Keywords": {keywords_by_segment[segment]}, "Documents": {documents}}}'
            )
        return lines


# -- sessions ---------------------------------------------------------------------------
def session_sizes(rng: np.random.Generator, count: int) -> np.ndarray:
    single = rng.random(count) < _SINGLE_CLICK_SHARE
    heavy = rng.random(count) < _HEAVY_TAIL_SHARE
    light_tail = rng.geometric(1.0 / (_LIGHT_TAIL_MEAN + 1.0), count) - 1
    heavy_tail = rng.geometric(1.0 / (_HEAVY_TAIL_MEAN + 1.0), count) - 1
    sizes = np.where(single, 1, 2 + np.where(heavy, heavy_tail, light_tail))
    return np.minimum(sizes, _MAX_SESSION_CLICKS).astype(np.int64)


def times_of_day(rng: np.random.Generator, count: int) -> np.ndarray:
    """Milliseconds after midnight UTC, following the hourly rhythm."""
    hours = rng.choice(24, size=count, p=_HOURLY_P)
    return hours * MS_PER_HOUR + rng.integers(0, MS_PER_HOUR, size=count)


def _sessions(
    rng: np.random.Generator, builder: _LineBuilder, day_start_ms: int, count: int,
    first_number: int,
) -> _Clicks:  # fmt: skip
    if count == 0:
        return _Clicks.empty()
    sizes = session_sizes(rng, count)
    starts = day_start_ms + times_of_day(rng, count)
    first_click = np.cumsum(sizes) - sizes
    total = int(sizes.sum())
    session_of_click = np.repeat(np.arange(count), sizes)
    position = np.arange(total) - first_click[session_of_click]
    gaps = rng.lognormal(np.log(_GAP_MEDIAN_MS), _GAP_SIGMA, total)
    gaps = np.clip(gaps, *_GAP_RANGE_MS).astype(np.int64)
    gaps[position == 0] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[first_click][session_of_click]
    # Gaps of at least 1 s make a session's times strictly increasing, so
    # (session, document, ms) never repeats: every click has its own dedup key.
    ms = starts[session_of_click] + elapsed
    ranks = builder.catalogue.sample_popular(rng, total)
    refined = (rng.random(count) < _REFINED_QUERY_SHARE) & (sizes >= 2)
    refine_at = np.where(refined, rng.integers(1, np.maximum(sizes, 2)), sizes)
    second_query_number = count + np.cumsum(refined) - 1
    segment_of_click = np.where(
        position >= refine_at[session_of_click],
        second_query_number[session_of_click],
        session_of_click,
    )
    queries = build_queries(rng, count + int(refined.sum()))
    numbers = first_number + np.arange(count, dtype=np.int64)
    session_ids = builder.session_ids(rng, numbers)
    lines = builder.click_lines(
        rng, ms, session_ids, session_of_click, ranks, segment_of_click, queries
    )
    return _Clicks(ms, numbers[session_of_click], ranks, lines)


def max_clicks_in_window(ms: np.ndarray, window_ms: int = FIVE_MINUTES_MS) -> int:
    """Largest n(t) = clicks in (t - window, t] over the clicks t (ms sorted)."""
    if len(ms) == 0:
        return 0
    inside = np.arange(len(ms)) - np.searchsorted(ms, ms - window_ms, side="right") + 1
    return int(inside.max())


def _bot_click_times(rng: np.random.Generator, ordinal: int, day_start_ms: int) -> np.ndarray:
    """Event times of one bot burst. The first two bots are the cases tests rely on:

    - bot 0: 150–300 clicks about 1.5 s apart, so ≥ 100 fall in 5 minutes (CRITICAL);
    - bot 1: 60–90 clicks within 2–4.5 minutes, centred on a 5-minute clock boundary:
      a sliding 5-minute window sees them all (≥ 50), each fixed 5-minute bucket ≤ 45;
    - the rest: 60–300 clicks at most 4 s apart on average.
    Even-numbered bots start at hh:m4:30, so their burst straddles a 5-minute boundary.
    Gaps vary ±50 % around their mean, so any 50 consecutive clicks span under 5 minutes.
    """
    if ordinal == 1:
        clicks = int(rng.integers(60, 91))
        span = int(rng.integers(120_000, 270_000))
        weights = 0.5 + rng.random(clicks - 1)
        gaps = np.maximum(1, (weights * span / weights.sum()).astype(np.int64))
        offsets = np.concatenate([[0], np.cumsum(gaps)])
        boundary = day_start_ms + FIVE_MINUTES_MS * int(rng.integers(12, 276))  # 01:00–23:00
        return boundary - offsets[clicks // 2] + offsets  # click n/2 opens the new bucket
    if ordinal == 0:
        clicks, mean_gap = int(rng.integers(150, 301)), 1_500
    else:
        clicks = int(rng.integers(_BOT_CLICKS[0], _BOT_CLICKS[1] + 1))
        span = int(rng.integers(*_BOT_TARGET_SPAN_MS))
        mean_gap = min(_BOT_MAX_MEAN_GAP_MS, span // (clicks - 1))
    gaps = np.maximum(1, (mean_gap * (0.5 + rng.random(clicks - 1))).astype(np.int64))
    if ordinal % 2 == 0:
        hour = int(rng.integers(1, 23))
        minute = 5 * int(rng.integers(0, 12)) + 4
        start = hour * MS_PER_HOUR + minute * 60_000 + 30_000 + int(rng.integers(0, 1000))
    else:
        start = int(rng.integers(20 * 60_000, 23 * MS_PER_HOUR + 30 * 60_000))
    return day_start_ms + start + np.concatenate([[0], np.cumsum(gaps)])


def _bots(
    rng: np.random.Generator, builder: _LineBuilder, day: date, bot_ordinals: list[int],
    first_number: int,
) -> tuple[_Clicks, list[BotTruth]]:  # fmt: skip
    """Bot bursts (one session each, within one day) and their truth."""
    if not bot_ordinals:
        return _Clicks.empty(), []
    day_start_ms = epoch_ms(day)
    parts: list[_Clicks] = []
    truths: list[BotTruth] = []
    numbers = first_number + np.arange(len(bot_ordinals), dtype=np.int64)
    session_ids = builder.session_ids(rng, numbers)
    queries = build_queries(rng, len(bot_ordinals))
    for i, ordinal in enumerate(bot_ordinals):
        ms = _bot_click_times(rng, ordinal, day_start_ms)
        clicks = len(ms)
        # A crawler: half of its clicks walk the catalogue, half follow popularity.
        crawl = rng.random(clicks) < 0.5
        ranks = np.where(
            crawl,
            builder.catalogue.sample_uniform(rng, clicks),
            builder.catalogue.sample_popular(rng, clicks),
        )
        zeros = np.zeros(clicks, dtype=np.int64)
        lines = builder.click_lines(rng, ms, [session_ids[i]], zeros, ranks, zeros, [queries[i]])
        parts.append(_Clicks(ms, np.full(clicks, numbers[i]), ranks, lines))
        truths.append(
            BotTruth(
                session_id=session_ids[i],
                date=day.isoformat(),
                clicks=clicks,
                first_ms=int(ms[0]),
                last_ms=int(ms[-1]),
                max_clicks_5min=max_clicks_in_window(ms),
            )
        )
    return _Clicks.concat(parts), truths


# -- the run ----------------------------------------------------------------------------
@dataclass
class _Carry:
    """What one day hands to later days."""

    spilled: _Clicks = field(default_factory=_Clicks.empty)  # clicks past midnight
    late: dict[int, list[str]] = field(default_factory=dict)  # file index -> lines
    duplicates: dict[int, list[str]] = field(default_factory=dict)  # next file's repeats
    sessions_yesterday: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _merged(base: list[str], extra: list[str], extra_keys: np.ndarray) -> list[str]:
    """`base` in order with each `extra` line placed at its fractional position key."""
    if not extra:
        return base
    keys = np.concatenate([np.arange(len(base), dtype=np.float64), extra_keys])
    everything = base + extra
    return [everything[i] for i in np.argsort(keys, kind="stable").tolist()]


def _merge_at_random(rng: np.random.Generator, base: list[str], extra: list[str]) -> list[str]:
    """`base` in order with `extra` lines dropped in at random places."""
    return _merged(base, extra, rng.uniform(-0.5, len(base) - 0.5, len(extra)))


class _Generator:
    def __init__(self, out_dir: Path, plan: RunPlan, progress: ProgressCallback | None) -> None:
        self.out_dir = out_dir
        self.plan = plan
        self.progress = progress
        first_ms = epoch_ms(plan.start)
        self.catalogue = Catalogue(
            plan.catalogue_size, plan.seed, (first_ms, first_ms + plan.days * MS_PER_DAY)
        )
        self.builder = _LineBuilder(self.catalogue, plan.seed)
        self.carry = _Carry()
        self.next_session_number = 0
        self.bad_lines_written = 0
        # Reasons come round in a seed-shuffled cycle: even spread, each one by the 8th.
        cycle = stream_rng(plan.seed, _STREAM_REASONS).permutation(len(_REASONS))
        self.reason_cycle = [_REASONS[i] for i in cycle.tolist()]
        self.documents_clicked = np.zeros(plan.catalogue_size, dtype=bool)
        self.days: dict[str, DayTruth] = {}
        self.totals = Totals()
        self.bots: list[BotTruth] = []

    def run(self) -> Manifest:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_articles(self.catalogue.rows_in_id_order(), self.out_dir / ARTICLES_FILE_NAME)
        bots_by_day: dict[int, list[int]] = defaultdict(list)
        for ordinal, day_index in enumerate(self.plan.bot_days.tolist()):
            bots_by_day[day_index].append(ordinal)
        for index in range(self.plan.days):
            self._day(index, bots_by_day.get(index, []))
        self.totals.documents = int(self.documents_clicked.sum())
        self.totals.bots = len(self.bots)
        manifest = Manifest(self.plan.params, self.days, self.totals, self.bots)
        manifest.write(self.out_dir)
        return manifest

    def _new_session_numbers(self, count: int) -> int:
        first = self.next_session_number
        self.next_session_number += count
        return first

    def _day(self, index: int, bot_ordinals: list[int]) -> None:
        plan = self.plan
        day = plan.start + timedelta(days=index)
        last_index = plan.days - 1
        rng = stream_rng(plan.seed, _STREAM_DAY, index)
        day_start_ms = epoch_ms(day)
        count = int(plan.sessions_by_day[index])
        own = _sessions(rng, self.builder, day_start_ms, count, self._new_session_numbers(count))
        bot_clicks, bot_truths = _bots(
            rng, self.builder, day, bot_ordinals, self._new_session_numbers(len(bot_ordinals))
        )
        clicks = _Clicks.concat([self.carry.spilled, own, bot_clicks])
        on_day = clicks.ms < day_start_ms + MS_PER_DAY
        self.carry.spilled = clicks.take(np.flatnonzero(~on_day))  # dropped after the last day
        today = clicks.take(np.flatnonzero(on_day))

        truth = DayTruth(
            clicks=len(today.lines),
            sessions=len(np.unique(today.session)),
            documents=len(np.unique(today.rank)),
            bot_sessions=len(bot_truths),
        )
        self._count_run_totals(today)

        on_time = self._hold_back_late(rng, today, index, last_index)
        in_time_order = on_time.take(np.lexsort((on_time.session, on_time.ms)))
        late_in = self.carry.late.pop(index, [])
        valid = _merge_at_random(rng, in_time_order.lines, late_in)
        lines = self._with_duplicates(rng, valid, index, last_index, truth)
        truth.late = len(late_in)
        bad = self._bad_lines(rng, day, rng.binomial(len(today.lines), plan.bad_rate), truth)
        lines = _merge_at_random(rng, lines, bad)
        truth.lines = len(lines)

        path = self.out_dir / f"{day.isoformat()}.json"
        text = "\n".join(lines) + "\n" if lines else ""
        path.write_bytes(text.encode("utf-8", "surrogateescape"))  # bad_encoding bytes
        self.days[day.isoformat()] = truth
        self.bots.extend(bot_truths)
        totals = self.totals
        totals.lines += truth.lines
        totals.duplicates += truth.duplicates
        totals.late += truth.late
        for reason, number in truth.bad.items():
            totals.bad[reason] += number
        if self.progress is not None:
            self.progress(day, truth.lines)

    def _hold_back_late(
        self, rng: np.random.Generator, today: _Clicks, index: int, last_index: int
    ) -> _Clicks:
        """Keep some clicks back for a file 1–3 days later (the last file at the latest);
        return the rest."""
        count = rng.binomial(len(today.lines), self.plan.late_rate) if index < last_index else 0
        late = np.sort(rng.choice(len(today.lines), size=count, replace=False))
        targets = np.minimum(index + rng.integers(1, 4, size=count), last_index).tolist()
        for line_index, target in zip(late.tolist(), targets, strict=True):
            self.carry.late.setdefault(target, []).append(today.lines[line_index])
        return today.take(np.setdiff1d(np.arange(len(today.lines)), late))

    def _count_run_totals(self, today: _Clicks) -> None:
        sessions = np.unique(today.session)
        # A session crossing midnight was already counted yesterday.
        new_sessions = ~np.isin(sessions, self.carry.sessions_yesterday, assume_unique=True)
        self.totals.sessions += int(new_sessions.sum())
        self.totals.clicks += len(today.lines)
        self.carry.sessions_yesterday = sessions
        self.documents_clicked[today.rank] = True

    def _with_duplicates(
        self, rng: np.random.Generator, valid: list[str], index: int, last_index: int,
        truth: DayTruth,
    ) -> list[str]:  # fmt: skip
        """Repeat some lines later in this file or anywhere in the next one."""
        count = rng.binomial(len(valid), self.plan.dup_rate)
        originals = np.sort(rng.choice(len(valid), size=count, replace=False))
        to_next_file = (rng.random(count) < 0.3) & (index < last_index)
        later_here = originals[~to_next_file]
        # Strictly after the original: its key plus at least 5 % of the rest of the file.
        stride = rng.uniform(0.05, 1.0, len(later_here))
        later_keys = later_here + (len(valid) - later_here) * stride
        if to_next_file.any():
            self.carry.duplicates.setdefault(index + 1, []).extend(
                valid[i] for i in originals[to_next_file].tolist()
            )
        lines = _merged(valid, [valid[i] for i in later_here.tolist()], later_keys)
        from_yesterday = self.carry.duplicates.pop(index, [])
        truth.duplicates = len(later_here) + len(from_yesterday)
        return _merge_at_random(rng, lines, from_yesterday)

    def _bad_lines(
        self, rng: np.random.Generator, day: date, count: int, truth: DayTruth
    ) -> list[str]:
        """`count` bad lines, each built from a fresh, well-formed record of this day."""
        if count == 0:
            return []
        numbers = np.arange(count) + self._new_session_numbers(count)
        session_ids = self.builder.session_ids(rng, numbers)
        ranks = self.catalogue.sample_popular(rng, count)
        documents = self.catalogue.documents(ranks)
        queries = build_queries(rng, count)
        times = epoch_ms(day) + times_of_day(rng, count)
        with_lists = day >= DOCUMENTS_LIST_FROM
        lists = self.builder.documents_lists(rng, [[doc_id] for doc_id in documents.ids])
        result = []
        for i in range(count):
            record: dict[str, object] = {
                "DateCreated": f"/Date({int(times[i])})/",
                "SessionId": session_ids[i],
                "DocumentId": documents.ids[i],
                "Url": documents.urls[i],
                "Title": documents.titles[i][:TITLE_LIMIT],
                "DOI": documents.dois[i],
                "ClinicalAreas": documents.areas[i],
                "Keywords": queries[i],
                "Documents": lists[i] if with_lists else [],
            }
            reason = self.reason_cycle[self.bad_lines_written % len(self.reason_cycle)]
            self.bad_lines_written += 1
            truth.bad[reason.value] += 1
            result.append(bad_line(reason, record, rng))
        return result


def run(out_dir: Path, plan: RunPlan, progress: ProgressCallback | None) -> Manifest:
    return _Generator(Path(out_dir), plan, progress).run()
