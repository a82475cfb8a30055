"""Search queries (the `Keywords` field) in the Trip syntax seen in the real log."""

from __future__ import annotations

import numpy as np

from tripflow.records.generate import vocabulary as vocab

KEYWORDS_LIMIT = 100  # the log cuts queries at 100 characters
EMPTY_SHARE = 0.13

# Uniform draws one query consumes (a fixed width keeps draws vectorised per day).
DRAWS_PER_QUERY = 12

# Query shapes and their cumulative probabilities, given a non-empty query.
_SHAPES: tuple[tuple[str, float], ...] = (
    ("plain", 0.50),
    ("wildcard", 0.56),
    ("title", 0.63),
    ("area", 0.68),
    ("boolean", 0.78),
    ("pico", 0.90),
    ("years", 0.96),
    ("tag", 1.00),
)
_AREAS = tuple(name for name, _ in vocab.AREA_WEIGHTS)


def _pick(items: tuple[str, ...], u: float) -> str:
    return items[min(int(u * len(items)), len(items) - 1)]


def build_query(u: list[float]) -> str:
    """One query from `DRAWS_PER_QUERY` uniforms in [0, 1)."""
    if u[0] < EMPTY_SHARE:
        return ""
    shape_u = (u[0] - EMPTY_SHARE) / (1.0 - EMPTY_SHARE)
    shape = next(name for name, upper in _SHAPES if shape_u < upper)
    condition = _pick(vocab.CONDITIONS, u[1])
    intervention = _pick(vocab.INTERVENTIONS, u[2])
    population = _pick(vocab.POPULATIONS, u[3])
    if shape == "plain":
        words = [condition, intervention, population][: 1 + int(u[4] * 3)]
        query = " ".join(words)
    elif shape == "wildcard":
        stem = condition.split()[0]
        query = f"{stem[: max(3, len(stem) - 2)]}* {intervention}"
    elif shape == "title":
        query = f'title:"{condition}" {intervention}' if u[4] < 0.6 else f"title:{condition}"
    elif shape == "area":
        query = f'area:"{_pick(_AREAS, u[4])}" {condition}'
    elif shape == "boolean":
        other = _pick(vocab.CONDITIONS, u[4])
        operator = _pick(("AND", "OR", "NOT", "AND"), u[5])
        query = f"{condition} {operator} {intervention}"
        if u[6] < 0.3:
            query = f"({condition} OR {other}) AND {intervention}"
    elif shape == "pico":
        comparison = "-" if u[4] < 0.3 else _pick(vocab.INTERVENTIONS, u[4])
        outcome = _pick(vocab.OUTCOMES, u[5])
        if u[6] < 0.35:  # long PICO queries run into the 100-character cut
            condition = f"{condition} and {_pick(vocab.CONDITIONS, u[11])}  with complications"
        query = f"({population} with {condition})({intervention})({comparison})({outcome})"
    elif shape == "years":
        first = 2000 + int(u[4] * 15)
        query = f"{condition} {intervention} from:{first}"
        if u[5] < 0.5:
            query += f" to:{first + 1 + int(u[6] * 5)}"
    else:  # tag
        query = f"{condition} tag:{_pick(vocab.QUERY_TAGS, u[4])}"
    # Real queries vary in case and carry stray spaces.
    if u[7] < 0.4:
        query = query[:1].upper() + query[1:]
    if u[8] < 0.05:
        query = " " + query
    if u[9] < 0.15:
        query += " " * (1 + int(u[10] * 3))
    return query[:KEYWORDS_LIMIT]


def build_queries(rng: np.random.Generator, count: int) -> list[str]:
    """`count` independent queries."""
    uniforms = rng.random((count, DRAWS_PER_QUERY)).tolist()
    return [build_query(row) for row in uniforms]
