"""The fixed document catalogue: ids, popularity, titles, urls, DOIs, clinical areas.

Documents are known by their popularity *rank* (0 = most clicked). Everything about a
document is a pure function of (seed, rank) — see `hashing` — so a day's clicks can build
just the documents they touch, and `allarticles.txt` can be streamed in id order (through
`tripflow.records.articles.write_articles`) without holding 2.3 M titles in memory.
Attributes are built for many documents at once: the draws are numpy columns, strings
are formatted per template group, and only the rare documents with a quirk take a slower
per-document path.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # json.dumps(str, ensure_ascii=False), minus overhead

import numpy as np

from tripflow.records.generate import vocabulary as vocab
from tripflow.records.generate.hashing import Draws, draw_columns, stream_key, stream_rng

# Limits of the real log (spec: "Fields of a record").
TITLE_LIMIT = 255

# Real ids live in 1e5..1e7.
_FIRST_ID = 100_000
_LAST_ID = 9_999_999

# Zipf–Mandelbrot popularity p(rank) ∝ 1/(rank + q)^s. The offset q keeps the single
# most popular document near 0.5 % of clicks while the top 1 % still take a third or more.
_ZIPF_EXPONENT = 1.0
_ZIPF_OFFSET = 20.0

_EMPTY_AREAS_SHARE = 0.12
_GOLDEN_FRACTION = 0.6180339887498949
_AREA_POOL_SIZE = 4096

# Per-document quirks. A few of the most clicked documents carry each one, so that even
# a two-day sample shows them in click records; elsewhere they occur at these rates.
_QUIRKS = (
    "tab_title", "newline_title", "long_title", "url_underscore", "url_no_h", "url_file",
    "url_missing", "title_change",
)  # fmt: skip
_QUIRK_RATES = np.array([0.0002, 0.0002, 0.005, 0.001, 0.001, 0.001, 0.0005, 0.02])
_QUIRK_THRESHOLDS = np.cumsum(_QUIRK_RATES)
_NO_QUIRK = len(_QUIRKS)
_FORCED_QUIRKS: dict[int, str] = {
    1: "title_change",
    2: "tab_title",
    3: "long_title",
    5: "newline_title",
    6: "title_change",
    7: "url_underscore",
    9: "long_title",
    11: "url_no_h",
    13: "url_file",
    17: "url_missing",
}
_ODDITY_SHARE = 0.02  # titles with mojibake or typographic characters
_TRAILING_SPACE_SHARE = 0.03
_OLD_TITLE_FORMS = ("Provisional: {}", "{} (draft)", "{} [update pending]")

# One 64-bit draw per column and document.
_COLUMNS = (
    "quirk", "template", "condition", "intervention", "intervention2", "population",
    "outcome", "organisation", "qualifier", "oddity", "oddity_pick", "trailing", "host",
    "n8", "n6", "n5", "n4", "n3", "k", "year", "mm", "dd", "doi", "doi_other",
    "doi_prefix", "doi_journal", "doi_year", "doi_number", "areas", "old_title", "changed",
    "extra",
)  # fmt: skip
_COLUMN = {name: i for i, name in enumerate(_COLUMNS)}

_CATALOGUE_STREAM = 1
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NON_LETTER = re.compile(r"[^a-z]+")
_CACHE_LIMIT = 200_000


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _as_objects(items: Iterable[str]) -> np.ndarray:
    return np.array(list(items), dtype=object)


# Where each title placeholder takes its words from: (options, draw column).
_TITLE_FIELDS: dict[str, tuple[np.ndarray, str]] = {
    "condition": (_as_objects(vocab.CONDITIONS), "condition"),
    "Condition": (_as_objects(map(_capitalised, vocab.CONDITIONS)), "condition"),
    "intervention": (_as_objects(vocab.INTERVENTIONS), "intervention"),
    "Intervention": (_as_objects(map(_capitalised, vocab.INTERVENTIONS)), "intervention"),
    "intervention2": (_as_objects(vocab.INTERVENTIONS), "intervention2"),
    "population": (_as_objects(vocab.POPULATIONS), "population"),
    "outcome": (_as_objects(vocab.OUTCOMES), "outcome"),
    "organisation": (_as_objects(vocab.ORGANISATIONS), "organisation"),
    "qualifier": (_as_objects(vocab.QUALIFIERS), "qualifier"),
}
# Numbers in url templates: (lowest, how many values, printf conversion).
_URL_NUMBERS: dict[str, tuple[int, int, str]] = {
    "n8": (10_000_000, 20_000_000, "%d"),
    "n6": (100_000, 900_000, "%d"),
    "n5": (10_000, 40_000, "%d"),
    "n4": (1000, 9000, "%d"),
    "n3": (100, 900, "%d"),
    "k": (1, 9, "%d"),
    "year": (2010, 10, "%d"),
    "mm": (1, 12, "%02d"),
    "dd": (1, 28, "%02d"),
}
# Host templates weighted like the real log (PubMed dominates).
_HOST_THRESHOLDS = np.array([0.40, 0.50, 0.60, 0.66, 0.72, 0.80, 0.85, 0.92, 0.97])
_PUBMED_HOSTS = (0, 1)
_COCHRANE_HOST = 7
_DOI_PREFIXES = ("1111", "1016", "1177", "1038", "2522", "1186", "1136", "1093")
_DOI_JOURNALS = ("j.", "s", "bmj.", "")


def _printf(template: str, conversion: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """A `{name}` template as a %-format and its field order (fast in list loops)."""
    parts, fields = [], []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal.replace("%", "%%"))
        if name is not None:
            parts.append(conversion.get(name, "%s"))
            fields.append(name)
    return "".join(parts), tuple(fields)


_TITLE_FORMATS = tuple(_printf(template, {}) for template in vocab.TITLE_TEMPLATES)
_URL_FORMATS = tuple(
    _printf(template, {name: spec[2] for name, spec in _URL_NUMBERS.items()})
    for template in vocab.URL_HOSTS
)


@dataclass(frozen=True, slots=True)
class Documents:
    """Attributes of a batch of documents, one list entry per requested rank."""

    ranks: list[int]
    ids: list[int]
    titles: list[str]  # the catalogue's full titles (some exceed TITLE_LIMIT)
    urls: list[str]
    dois: list[str]
    areas: list[str]  # the raw ClinicalAreas string every click of the document carries
    old_titles: list[str | None]  # what clicks showed before a title change, if any
    title_changed_ms: list[int]  # clicks before this instant show the old title


@dataclass(frozen=True, slots=True)
class DocumentJson:
    """Pre-escaped JSON pieces of a click record for one document."""

    head: str  # "DocumentId": …, "Url": …
    title: str  # JSON string of the (cut) current title
    old_title: str | None  # JSON string of the (cut) old title
    title_changed_ms: int
    tail: str  # "DOI": …, "ClinicalAreas": …


class _DrawColumns:
    """Named columns of per-document draws, read as picks or uniforms."""

    def __init__(self, draws: np.ndarray) -> None:
        self._draws = draws

    def raw(self, column: str) -> np.ndarray:
        return self._draws[:, _COLUMN[column]]

    def pick(self, column: str, count: int) -> np.ndarray:
        return (self.raw(column) % np.uint64(count)).astype(np.int64)

    def uniform(self, column: str) -> np.ndarray:
        return (self.raw(column) >> np.uint64(11)) * (1.0 / (1 << 53))


class Catalogue:
    """`size` documents with ids, Zipf popularity and deterministic attributes."""

    def __init__(self, size: int, seed: int, time_range_ms: tuple[int, int]) -> None:
        if size < 100:
            raise ValueError("the catalogue needs at least 100 documents")
        self.size = size
        self._key = stream_key(seed, _CATALOGUE_STREAM)
        self._time_range_ms = time_range_ms
        rng = stream_rng(seed, _CATALOGUE_STREAM)
        # Sorted distinct ids spread over the real range, then shuffled onto ranks so
        # that popularity does not follow id order.
        mean_gap = max(1.0, 0.95 * (_LAST_ID - _FIRST_ID) / size)  # 5 % headroom
        gaps = rng.integers(1, max(2, int(2 * mean_gap)), size=size)
        sorted_ids = _FIRST_ID + np.cumsum(gaps) - gaps[0]
        # Should the gaps still overshoot, keep the tail in range, strictly increasing.
        sorted_ids = np.minimum(sorted_ids, _LAST_ID - np.arange(size - 1, -1, -1))
        self._id_order = rng.permutation(size)  # rank -> position in sorted_ids
        self._id_of_rank = sorted_ids[self._id_order]
        weights = 1.0 / (np.arange(size, dtype=np.float64) + _ZIPF_OFFSET) ** _ZIPF_EXPONENT
        self._cdf = np.cumsum(weights)
        self._cdf /= self._cdf[-1]
        self._weyl_offset = float(rng.random())
        self._area_pool = _area_pool(rng)
        self._json_cache: dict[int, DocumentJson] = {}

    # -- popularity ---------------------------------------------------------------------
    def sample_popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Ranks drawn by popularity (heavy-tailed)."""
        ranks = np.searchsorted(self._cdf, rng.random(n), side="right")
        return np.minimum(ranks, self.size - 1).astype(np.int64)

    def sample_uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Ranks drawn uniformly (a crawler walks the whole catalogue)."""
        return rng.integers(0, self.size, size=n, dtype=np.int64)

    def ids(self, ranks: np.ndarray) -> np.ndarray:
        return self._id_of_rank[ranks]

    # -- attributes ---------------------------------------------------------------------
    def documents(self, ranks: np.ndarray) -> Documents:
        ranks = np.asarray(ranks, dtype=np.int64)
        draws = _DrawColumns(draw_columns(self._key, ranks, len(_COLUMNS)))
        pick, uniform = draws.pick, draws.uniform

        quirks = np.searchsorted(_QUIRK_THRESHOLDS, uniform("quirk"), side="right")
        for rank, quirk in _FORCED_QUIRKS.items():
            quirks[ranks == rank] = _QUIRKS.index(quirk)

        titles = _format_groups(pick("template", len(_TITLE_FORMATS)), _TITLE_FORMATS, {
            name: options[pick(column, len(options))]
            for name, (options, column) in _TITLE_FIELDS.items()
        })  # fmt: skip
        extra_draws = draws.raw("extra").tolist()
        quirky = np.flatnonzero(quirks != _NO_QUIRK).tolist()
        for i in quirky:
            titles[i] = _quirky_title(titles[i], _QUIRKS[quirks[i]], Draws([extra_draws[i]]))
        oddities = pick("oddity_pick", len(vocab.TITLE_ODDITIES))
        for i in np.flatnonzero(uniform("oddity") < _ODDITY_SHARE).tolist():
            titles[i] += f" ({vocab.TITLE_ODDITIES[oddities[i]]})"
        for i in np.flatnonzero(uniform("trailing") < _TRAILING_SPACE_SHARE).tolist():
            titles[i] += " "  # trailing spaces occur in real titles

        hosts = np.searchsorted(_HOST_THRESHOLDS, uniform("host"), side="right")
        numbers = {name: low + pick(name, count) for name, (low, count, _) in _URL_NUMBERS.items()}
        slugs = np.array(
            [_NON_ALNUM.sub("-", t.lower()).strip("-")[:60].rstrip("-") or "doc" for t in titles],
            dtype=object,
        )
        urls = _format_groups(hosts, _URL_FORMATS, {**numbers, "slug": slugs})
        for i in quirky:
            urls[i] = _quirky_url(urls[i], _QUIRKS[quirks[i]], Draws([extra_draws[i] + 1]))

        dois = _dois(hosts, numbers, draws)
        empty_areas = (ranks * _GOLDEN_FRACTION + self._weyl_offset) % 1.0 < _EMPTY_AREAS_SHARE
        pool = pick("areas", _AREA_POOL_SIZE).tolist()
        areas = ["" if empty else self._area_pool[p] for empty, p in zip(
            empty_areas.tolist(), pool, strict=True
        )]  # fmt: skip

        old_titles: list[str | None] = [None] * len(ranks)
        changed_ms = [0] * len(ranks)
        first_ms, last_ms = self._time_range_ms
        forms = pick("old_title", len(_OLD_TITLE_FORMS)).tolist()
        change_at = uniform("changed").tolist()
        for i in np.flatnonzero(quirks == _QUIRKS.index("title_change")).tolist():
            old_titles[i] = _OLD_TITLE_FORMS[forms[i]].format(titles[i].rstrip())
            # Forced ones change mid-run, so that the change day shows both titles.
            low, width = (0.25, 0.5) if int(ranks[i]) in _FORCED_QUIRKS else (0.0, 1.0)
            changed_ms[i] = first_ms + int((low + width * change_at[i]) * (last_ms - first_ms))
        return Documents(
            ranks.tolist(), self._id_of_rank[ranks].tolist(), titles, urls, dois, areas,
            old_titles, changed_ms,
        )  # fmt: skip

    def json_pieces(self, ranks: np.ndarray) -> dict[int, DocumentJson]:
        """JSON pieces for the given ranks (cached: popular documents recur daily)."""
        cache = self._json_cache
        wanted = np.unique(ranks)
        missing = np.array([r for r in wanted.tolist() if r not in cache], dtype=np.int64)
        if len(cache) + len(missing) > _CACHE_LIMIT:
            cache.clear()  # bounded memory; entries are pure functions, so rebuilds agree
            missing = wanted
        docs = self.documents(missing)
        for rank, doc_id, title, url, doi, areas, old_title, changed_ms in zip(
            docs.ranks, docs.ids, docs.titles, docs.urls, docs.dois, docs.areas,
            docs.old_titles, docs.title_changed_ms, strict=True,
        ):  # fmt: skip
            cache[rank] = DocumentJson(
                head=f'"DocumentId": {doc_id}, "Url": {encode_basestring(url)}',
                title=encode_basestring(title[:TITLE_LIMIT]),
                old_title=None if old_title is None else encode_basestring(old_title[:TITLE_LIMIT]),
                title_changed_ms=changed_ms,
                tail=f'"DOI": {encode_basestring(doi)}, '
                f'"ClinicalAreas": {encode_basestring(areas)}',
            )
        return cache

    # -- the catalogue file -------------------------------------------------------------
    def rows_in_id_order(self, chunk: int = 50_000) -> Iterator[tuple[int, str, str]]:
        """(id, title, url) of every document, built a chunk at a time."""
        rank_of_position = np.empty(self.size, dtype=np.int64)
        rank_of_position[self._id_order] = np.arange(self.size, dtype=np.int64)
        for start in range(0, self.size, chunk):
            docs = self.documents(rank_of_position[start : start + chunk])
            yield from zip(docs.ids, docs.titles, docs.urls, strict=True)


def _dois(hosts: np.ndarray, numbers: dict[str, np.ndarray], draws: _DrawColumns) -> list[str]:
    """DOIs: most PubMed documents, a few others; Cochrane ones match their url."""
    with_doi = (np.isin(hosts, _PUBMED_HOSTS) & (draws.uniform("doi") < 0.6)) | (
        draws.uniform("doi_other") < 0.03
    )
    dois = [""] * len(hosts)
    prefixes = draws.pick("doi_prefix", len(_DOI_PREFIXES)).tolist()
    journals = draws.pick("doi_journal", len(_DOI_JOURNALS)).tolist()
    years = (2000 + draws.pick("doi_year", 20)).tolist()
    serials = draws.pick("doi_number", 100_000).tolist()
    for i in np.flatnonzero(with_doi).tolist():
        journal = _DOI_JOURNALS[journals[i]]
        dois[i] = f"10.{_DOI_PREFIXES[prefixes[i]]}/{journal}{years[i]}.{serials[i]:05d}"
    cochrane = np.flatnonzero(hosts == _COCHRANE_HOST)
    for i, n6, k in zip(
        cochrane.tolist(), numbers["n6"][cochrane].tolist(), numbers["k"][cochrane].tolist(),
        strict=True,
    ):  # fmt: skip
        dois[i] = f"10.1002/14651858.CD{n6}.pub{k}"
    return dois


def _format_groups(
    choice: np.ndarray,
    formats: tuple[tuple[str, tuple[str, ...]], ...],
    values: dict[str, np.ndarray],
) -> list[str]:
    """Per item, formats[choice] filled from `values` — one list loop per format."""
    result = np.empty(len(choice), dtype=object)
    for index, (fmt, fields) in enumerate(formats):
        members = np.flatnonzero(choice == index)
        if len(members) == 0:
            continue
        columns = [values[name][members].tolist() for name in fields]
        result[members] = [fmt % row for row in zip(*columns, strict=True)] if columns else fmt
    return result.tolist()


def _random_title(draws: Draws) -> str:
    """One title from per-document draws (the slow path, for quirky documents)."""
    fmt, fields = _TITLE_FORMATS[draws.below(len(_TITLE_FORMATS))]
    words = []
    for name in fields:
        options, _ = _TITLE_FIELDS[name]
        words.append(options[draws.below(len(options))])
    return fmt % tuple(words)


def _quirky_title(title: str, quirk: str, draws: Draws) -> str:
    if quirk == "long_title":  # the catalogue keeps it whole; clicks cut it at 255
        while len(title) <= TITLE_LIMIT + 15:
            clause = _random_title(draws)
            if clause[1:2].islower():  # "Risk of…" -> "risk of…", but "ACE…" stays
                clause = clause[:1].lower() + clause[1:]
            title = f"{title.rstrip('.?')}; {clause}"
    elif quirk in ("tab_title", "newline_title"):
        # The continuation starts with a letter, never "<digits>\t": readers can tell it
        # from a new record.
        separator = "\t" if quirk == "tab_title" else "\n"
        title = f"{title}{separator}{_capitalised(draws.pick(vocab.QUALIFIERS))}"
    return title


def _quirky_url(url: str, quirk: str, draws: Draws) -> str:
    if quirk == "url_underscore":
        return f"_{url}"
    if quirk == "url_no_h":
        return url[1:]  # "ttp://…"
    if quirk == "url_file":
        user = draws.pick(("admin", "jsmith", "library", "user"))
        return f"file:///C:/Users/{user}/Documents/{url.rsplit('/', 1)[-1] or 'paper'}.pdf"
    if quirk == "url_missing":
        return ""
    return url


# -- clinical areas ---------------------------------------------------------------------
_AREA_NAMES = tuple(name for name, _ in vocab.AREA_WEIGHTS)
_AREA_P = np.array([weight for _, weight in vocab.AREA_WEIGHTS])
_AREA_P = _AREA_P / _AREA_P.sum()


def _area_pool(rng: np.random.Generator) -> list[str]:
    """ClinicalAreas strings documents choose from (real combinations are few, too)."""
    return [_area_string(rng) for _ in range(_AREA_POOL_SIZE)]


def _area_string(rng: np.random.Generator) -> str:
    u = rng.random()
    count = 1 if u < 0.5 else 2 if u < 0.8 else 3 if u < 0.94 else 4
    # A few areas dominate: weighted, without repeats.
    names = [_AREA_NAMES[i] for i in rng.choice(len(_AREA_NAMES), count, replace=False, p=_AREA_P)]
    if rng.random() < 0.8:
        names.sort()
    if rng.random() < 0.07:
        names = _with_spelling_variants(names, rng)
    if rng.random() < 0.003:
        names.append(vocab.UNKNOWN_AREA_SLUGS[rng.integers(len(vocab.UNKNOWN_AREA_SLUGS))])
    joined = ",".join(names)
    return f",{joined}" if rng.random() < 0.85 else joined


def _spelling_variant(name: str, rng: np.random.Generator) -> str:
    lower = name.lower().replace("'", "")
    if " " in name and rng.random() < 0.4:
        return _NON_LETTER.sub("_", lower).strip("_")  # physical_medicine
    return _NON_LETTER.sub("", lower)  # obgyn, emergencymedicine, neurology


def _with_spelling_variants(names: list[str], rng: np.random.Generator) -> list[str]:
    """Lower-case and slug spellings, sometimes beside the canonical one (real quirk)."""
    result: list[str] = []
    for name in names:
        u = rng.random()
        if u < 0.4:
            result.append(_spelling_variant(name, rng))
        elif u < 0.8:
            result.extend((name, _spelling_variant(name, rng)))  # "Neurology,neurology"
        else:
            result.append(name)
    if rng.random() < 0.4:
        result.append(vocab.EXTRA_AREA_SLUGS[rng.integers(len(vocab.EXTRA_AREA_SLUGS))])
    return result
