"""manifest.json: the ground truth of a generated log.

Day figures are keyed by date. `clicks`, `sessions`, `documents` and `bot_sessions` count
distinct clicks whose *event* date is that day (wherever they were written); `lines`,
`duplicates`, `late` and `bad` describe that day's *file*. Every line of a file is exactly
one of: an on-time click, a late click (first copy of a click written to a file after its
event date), a duplicate (the same bytes as a line written before), or a bad line — so
`lines = on-time + late + duplicates + sum(bad)`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tripflow.records.schema import Reason

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def no_bad_lines() -> dict[str, int]:
    """Every reason with a zero count, in the vocabulary's order."""
    return {reason.value: 0 for reason in Reason}


@dataclass
class DayTruth:
    clicks: int = 0  # distinct clicks with this event date
    sessions: int = 0  # distinct sessions with a click this day
    documents: int = 0  # distinct documents clicked this day
    lines: int = 0  # lines in this day's file, all kinds
    duplicates: int = 0  # lines repeating the bytes of an earlier line
    late: int = 0  # first copies of clicks whose event date is before this file's
    bad: dict[str, int] = field(default_factory=no_bad_lines)  # reason -> lines
    bot_sessions: int = 0  # bot sessions with a click this day


@dataclass
class BotTruth:
    session_id: str
    date: str  # event date of all its clicks
    clicks: int
    first_ms: int
    last_ms: int
    max_clicks_5min: int  # largest n(t) = clicks in (t - 5 min, t]


@dataclass
class Totals:
    lines: int = 0
    clicks: int = 0  # distinct clicks
    sessions: int = 0  # distinct sessions (one crossing midnight counts once)
    documents: int = 0  # distinct documents clicked
    duplicates: int = 0
    late: int = 0
    bad: dict[str, int] = field(default_factory=no_bad_lines)
    bots: int = 0  # bot sessions


@dataclass
class Manifest:
    params: dict[str, object]
    days: dict[str, DayTruth]  # "YYYY-MM-DD" -> truth, in date order
    totals: Totals
    bots: list[BotTruth]
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, object]:
        return {
            "format_version": self.format_version,
            "params": self.params,
            "days": {day: asdict(truth) for day, truth in self.days.items()},
            "totals": asdict(self.totals),
            "bots": [asdict(bot) for bot in self.bots],
        }

    def write(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, out_dir: Path) -> Manifest:
        raw = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        return cls(
            params=raw["params"],
            days={day: DayTruth(**truth) for day, truth in raw["days"].items()},
            totals=Totals(**raw["totals"]),
            bots=[BotTruth(**bot) for bot in raw["bots"]],
            format_version=raw["format_version"],
        )
