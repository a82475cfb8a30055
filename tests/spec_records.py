"""The spec's validity rule for one record (spec/tripclick-format.md, "Fields of a record"
and "Bad input"), restated once for the tests' independent reference models — apart from
tripflow's parser on purpose, so a mistake there cannot hide in both."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tests.spec_areas import area_name

ONE_DAY_MS = 86_400_000
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


@dataclass(frozen=True)
class SpecRecord:
    """What a valid record holds, as the reference models read it."""

    session: str
    document: int
    ms: int
    title: str | None
    areas: frozenset[str]


def spec_record(line: bytes, read_ms: int) -> SpecRecord | None:
    """The record a line holds, or None when the spec says quarantine it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip(" \t\r\n")
    text = re.sub(r"^\[\s*\{", "{", text)
    text = re.sub(r"\}[\s,\]]*$", "}", text)
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    stamp = record.get("DateCreated")
    match = re.fullmatch(r"/Date\((\d+)\)/", stamp) if isinstance(stamp, str) else None
    if match is None:
        return None
    ms = int(match.group(1))
    session = _without_nul(record.get("SessionId"))
    if not isinstance(session, str) or not session.strip():
        return None
    document = record.get("DocumentId")
    if isinstance(document, bool) or not isinstance(document, int):
        return None
    if ms < EARLIEST_MS or ms - ONE_DAY_MS > read_ms:
        return None
    title = _without_nul(record.get("Title"))
    areas_text = _without_nul(record.get("ClinicalAreas"))
    areas = set()
    if isinstance(areas_text, str):
        for piece in areas_text.split(","):
            name = area_name(piece)
            if name:
                areas.add(name)
    return SpecRecord(session, document, ms, title if isinstance(title, str) else None,
                      frozenset(areas))


def _without_nul(value: object) -> object:
    """Spec "Hostile bytes": U+0000 is removed from the string fields of a valid record."""
    return value.replace("\x00", "") if isinstance(value, str) else value
