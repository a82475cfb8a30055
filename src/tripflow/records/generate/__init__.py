"""Synthetic TripClick logs with ground truth (`tripflow generate`).

Writes one `YYYY-MM-DD.json` per day in the exact layout of the real log, the
`allarticles.txt` catalogue, and `manifest.json` with what every file holds (see
`manifest`). Same arguments and seed give the same bytes in every file.

    generate(out_dir, start=date(2016, 1, 1), days=7)     # ~10 k clicks a day
    generate_preset_tripclick(out_dir)                     # the full 2013–2020 scale
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from tripflow.records.generate.engine import (
    ProgressCallback,
    RunPlan,
    daily_factors,
    plan_rng,
    run,
    spread_bots,
)
from tripflow.records.generate.manifest import BotTruth, DayTruth, Manifest, Totals

__all__ = [
    "DEFAULT_SESSIONS_PER_DAY",
    "BotTruth",
    "DayTruth",
    "Manifest",
    "Totals",
    "generate",
    "generate_preset_tripclick",
    "tripclick_plan",
]

# 3000 sessions ≈ 10 k clicks a day: a default week is ~70 k clicks.
DEFAULT_SESSIONS_PER_DAY = 3000

# The real log: 2,347,977 documents, 1,602,648 sessions, 2013-01-01 → 2020-10-28.
TRIPCLICK_DOCUMENTS = 2_347_977
TRIPCLICK_SESSIONS = 1_602_648
TRIPCLICK_START = date(2013, 1, 1)
TRIPCLICK_END = date(2020, 10, 28)
# Compressed megabytes per year of the real log: relative volume (2020 is Jan–Oct 28).
TRIPCLICK_YEAR_SIZES_MB = {
    2013: 56, 2014: 62, 2015: 61, 2016: 91, 2017: 103, 2018: 115, 2019: 103, 2020: 77,
}  # fmt: skip
TRIPCLICK_RATES = {"dup_rate": 0.005, "late_rate": 0.002, "bad_rate": 0.0005}
TRIPCLICK_BOTS_PER_MONTH = 3

# Catalogue size relative to clicks, as in the real log (2.35 M documents, 5.3 M clicks).
_DOCUMENTS_PER_CLICK = 0.44
_MEAN_CLICKS_PER_SESSION = 3.3
_MIN_DOCUMENTS = 1_000


def _check_seed(seed: int) -> None:
    if seed < 0:  # numpy's SeedSequence takes non-negative entropy only
        raise ValueError(f"seed must not be negative, got {seed}")


def _checked_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return float(value)


def _as_date(value: date | str) -> date:
    if isinstance(value, str):
        return date.fromisoformat(value)
    return date(value.year, value.month, value.day)  # a datetime counts as its date


def _catalogue_size(total_sessions: int) -> int:
    documents = round(total_sessions * _MEAN_CLICKS_PER_SESSION * _DOCUMENTS_PER_CLICK)
    return min(max(documents, _MIN_DOCUMENTS), TRIPCLICK_DOCUMENTS)


def generate(
    out_dir: Path | str,
    *,
    start: date | str,
    days: int,
    seed: int = 42,
    sessions_per_day: int = DEFAULT_SESSIONS_PER_DAY,
    dup_rate: float = 0.0,
    late_rate: float = 0.0,
    bad_rate: float = 0.0,
    bots: int = 0,
    servers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Write `days` day files from `start` into `out_dir`; return the ground truth.

    `sessions_per_day` is the weekly mean (weekends are quieter); rates are fractions of
    clicks; `bots` sessions are spread over the days. `servers` is recorded only: the
    producer splits records between simulated servers itself. `progress(day, lines)` is
    called after each day file is written.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if sessions_per_day < 0 or bots < 0:
        raise ValueError("sessions_per_day and bots must not be negative")
    _check_seed(seed)
    start = _as_date(start)
    rng = plan_rng(seed)
    sessions_by_day = np.rint(sessions_per_day * daily_factors(rng, start, days)).astype(np.int64)
    plan = _plan(
        start,
        sessions_by_day,
        spread_bots(rng, bots, days),
        seed=seed,
        rates={"dup_rate": dup_rate, "late_rate": late_rate, "bad_rate": bad_rate},
        catalogue_size=_catalogue_size(int(sessions_by_day.sum())),
        extra_params={"preset": None, "sessions_per_day": sessions_per_day, "servers": servers},
    )
    return run(Path(out_dir), plan, progress)


def generate_preset_tripclick(
    out_dir: Path | str,
    seed: int = 42,
    progress: ProgressCallback | None = None,
    *,
    days: int | None = None,
) -> Manifest:
    """The full-scale log: 2013-01-01 → 2020-10-28, ≈ 1.6 M sessions, ≈ 5.3 M clicks.

    Day volume follows the real log's yearly sizes and the weekly rhythm, with small rates
    of duplicates, late and bad lines and a few bots a month. `days` keeps only the first
    days of that plan (quick checks; the catalogue stays full size).
    """
    return run(Path(out_dir), tripclick_plan(seed, days=days), progress)


def tripclick_plan(seed: int = 42, *, days: int | None = None) -> RunPlan:
    """The preset's plan: sessions per day and bot days for 2013-01-01 → 2020-10-28."""
    start, end = TRIPCLICK_START, TRIPCLICK_END
    all_days = (end - start).days + 1
    _check_seed(seed)
    rng = plan_rng(seed)
    dates = [start + timedelta(days=i) for i in range(all_days)]
    days_in_year = Counter(d.year for d in dates)
    year_weight = np.array([TRIPCLICK_YEAR_SIZES_MB[d.year] / days_in_year[d.year] for d in dates])
    weights = year_weight * daily_factors(rng, start, all_days)
    sessions_by_day = np.rint(TRIPCLICK_SESSIONS * weights / weights.sum()).astype(np.int64)
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    bot_days = spread_bots(rng, TRIPCLICK_BOTS_PER_MONTH * months, all_days)
    if days is not None:  # a prefix of the full plan
        if not 1 <= days <= all_days:
            raise ValueError(f"days must be between 1 and {all_days}, got {days}")
        sessions_by_day = sessions_by_day[:days]
        bot_days = bot_days[bot_days < days]
    return _plan(
        start,
        sessions_by_day,
        bot_days,
        seed=seed,
        rates=TRIPCLICK_RATES,
        catalogue_size=TRIPCLICK_DOCUMENTS,
        extra_params={"preset": "tripclick", "sessions_per_day": None, "servers": None},
    )


def _plan(
    start: date,
    sessions_by_day: np.ndarray,
    bot_days: np.ndarray,
    *,
    seed: int,
    rates: dict[str, float],
    catalogue_size: int,
    extra_params: dict[str, object],
) -> RunPlan:
    checked = {name: _checked_rate(name, value) for name, value in rates.items()}
    days = len(sessions_by_day)
    params: dict[str, object] = {
        "preset": extra_params["preset"],
        "start": start.isoformat(),
        "days": days,
        "end": (start + timedelta(days=days - 1)).isoformat(),
        "seed": seed,
        "sessions_per_day": extra_params["sessions_per_day"],
        **checked,
        "bots": len(bot_days),
        "servers": extra_params["servers"],
        "documents": catalogue_size,
    }
    return RunPlan(
        start=start,
        sessions_by_day=sessions_by_day,
        bot_days=bot_days,
        seed=seed,
        catalogue_size=catalogue_size,
        params=params,
        **checked,
    )
