"""The spec's clinical-area names (spec/tripclick-format.md, "Clinical areas"), restated
once for the tests' independent reference models — apart from tripflow's own
normalisation on purpose, so a mistake there cannot hide in both."""

from __future__ import annotations

import re

# The 27 names seen in the log, plus the 5 the spec adds.
CANONICAL_AREAS = [
    "Anesthesiology", "Cardiology", "Critical Care", "Dentistry", "Dermatology",
    "Emergency Medicine", "Endocrinology", "Gastroenterology", "Geriatrics", "Hematology",
    "Infectious Disease", "Neurology", "OB-Gyn", "Oncology", "Ophthalmology", "Orthopedic",
    "Otolaryngology-ENT", "Pediatrics", "Physical Medicine", "Primary Care", "Psychiatry",
    "Pulmonology", "Radiology", "Rheumatology", "Surgery", "Urology", "Women's Health",
    "Sports Medicine", "Preventive Medicine", "Public Health", "Epidemiology", "Hospice",
]  # fmt: skip


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())  # lower-cased, every non-letter removed


_BY_KEY = {_key(name): name for name in CANONICAL_AREAS}


def canonical_area(name: str) -> str | None:
    """The canonical spelling of a known area name, else None (unmapped or empty)."""
    return _BY_KEY.get(_key(name)) if name.strip() else None


def area_name(name: str) -> str | None:
    """The name a record's area set holds for one comma-separated piece: the canonical
    spelling of a known area, else the name title-cased with `_` as a space; None when
    the piece is empty."""
    if not name.strip():
        return None
    known = canonical_area(name)
    if known is not None:
        return known
    return " ".join(word.capitalize() for word in name.replace("_", " ").split())
