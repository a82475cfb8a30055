"""Clinical-area normalisation (spec: "Clinical areas").

`ClinicalAreas` is a comma-separated string with mixed spellings (`",Oncology,Surgery"`,
`"Pediatrics,neurology,Neurology"`, `"preventive_medicine"`). A name is matched on its
lower-cased letters only, so every spelling of a known area maps to one canonical name;
anything else is kept, title-cased (`_` as a space), among the record's areas and also
listed as unmapped, so that the area marts count it and the quality checks can tell it.
"""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

# The 27 names of the spec, then the 5 it adds (seen only as slugs in the log).
CANONICAL_AREAS: tuple[str, ...] = (
    "Anesthesiology",
    "Cardiology",
    "Critical Care",
    "Dentistry",
    "Dermatology",
    "Emergency Medicine",
    "Endocrinology",
    "Gastroenterology",
    "Geriatrics",
    "Hematology",
    "Infectious Disease",
    "Neurology",
    "OB-Gyn",
    "Oncology",
    "Ophthalmology",
    "Orthopedic",
    "Otolaryngology-ENT",
    "Pediatrics",
    "Physical Medicine",
    "Primary Care",
    "Psychiatry",
    "Pulmonology",
    "Radiology",
    "Rheumatology",
    "Surgery",
    "Urology",
    "Women's Health",
    "Sports Medicine",
    "Preventive Medicine",
    "Public Health",
    "Epidemiology",
    "Hospice",
)


def area_match_key(name: str) -> str:
    """The spelling-blind form a name is matched on: lower case, letters only."""
    return "".join(char for char in name.lower() if char.isalpha())


_CANONICAL_BY_KEY: dict[str, str] = {area_match_key(name): name for name in CANONICAL_AREAS}

AREA_LIST_TYPE = pa.list_(pa.string())


def _unmapped_display_name(name: str) -> str:
    """'tropical_medicine' -> 'Tropical Medicine' (capitalise words, `_` is a space).

    Word-wise capitalisation rather than str.title(), which would turn "children's"
    into "Children'S".
    """
    return " ".join(word[:1].upper() + word[1:].lower() for word in name.replace("_", " ").split())


def is_canonical(name: str) -> bool:
    """Whether a normalised area name is one of the canonical ones (else: unmapped)."""
    return name in _CANONICAL_NAMES


_CANONICAL_NAMES = frozenset(CANONICAL_AREAS)


@lru_cache(maxsize=65_536)
def _normalise_cached(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # Cached on the raw string: the log repeats a few thousand distinct area strings.
    areas: set[str] = set()
    unmapped: set[str] = set()
    for piece in raw.split(","):
        name = piece.strip()
        if not name:
            continue
        known = _CANONICAL_BY_KEY.get(area_match_key(name))
        if known is None:
            known = _unmapped_display_name(name)
            unmapped.add(known)
        areas.add(known)
    return tuple(sorted(areas)), tuple(sorted(unmapped))


def normalise_areas(raw: str | None) -> tuple[list[str], list[str]]:
    """Split one `ClinicalAreas` string into (its areas, the unmapped ones among them).

    Areas: known names in their canonical spelling and unknown ones title-cased; both
    lists are sorted and hold each name once. `None` or `""` gives two empty lists.
    """
    if not raw:
        return [], []
    areas, unmapped = _normalise_cached(raw)
    return list(areas), list(unmapped)


def normalise_area_column(raw: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Vectorised `normalise_areas` over a string column: (areas, unmapped) list arrays.

    Each distinct string is normalised once (dictionary-encode, normalise the
    dictionary, gather back by index). A null input row gives null in both outputs:
    the record had no `ClinicalAreas` at all, which is not the same as an empty one.
    """
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    encoded = pc.dictionary_encode(raw)
    normalised = [normalise_areas(value) for value in encoded.dictionary.to_pylist()]
    areas = pa.array([pair[0] for pair in normalised], AREA_LIST_TYPE)
    unmapped = pa.array([pair[1] for pair in normalised], AREA_LIST_TYPE)
    return areas.take(encoded.indices), unmapped.take(encoded.indices)
