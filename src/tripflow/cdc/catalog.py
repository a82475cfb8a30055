"""The operational catalogue `catalog.documents`: loaded by `tripflow articles` (upsert)
and edited by `tripflow catalog simulate` as a CMS's editors would."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
import pyarrow as pa

from tripflow import db, services
from tripflow.db import sqlfiles
from tripflow.db.copy import copy_arrow
from tripflow.settings import Settings

_SQL = sqlfiles.queries("cdc", "cdc.sql")

# Share of each kind of edit (weights), as editors make them.
EDITS = {"title": 45, "url": 25, "create": 12, "delete": 8, "doi": 10}
_WORDS = ("guideline", "systematic review", "randomised trial", "cohort study", "asthma",
          "diabetes", "hypertension", "children", "older adults", "primary care",
          "management", "diagnosis", "screening", "treatment", "prevention", "outcomes")


def upsert(conn: psycopg.Connection, articles: pa.Table) -> int:
    """Insert or update `articles` (document_id, title, url) into catalog.documents in the
    caller's transaction; returns the rows written (changed or new)."""
    conn.execute(_SQL["stage_catalog"])
    copy_arrow(conn, "catalog_load", articles.select(["document_id", "title", "url"]),
               ["int8", "text", "text"])
    return conn.execute(_SQL["upsert_catalog"]).rowcount


@dataclass
class SimulationSummary:
    edits: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.edits.values())

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.edits.items()))
        return f"catalog simulate: {self.total} edits ({kinds}) in {self.seconds:.1f} s"


def _fixed_title(rng: random.Random, title: str | None) -> str:
    """A corrected title: always different from the one before."""
    title = (title or "").strip()
    fixes = [
        lambda t: t.replace("  ", " ") if "  " in t else None,
        lambda t: t[:1].upper() + t[1:] if t[:1].islower() else None,
        lambda t: re.sub(r"\s*\(updated \d{4}\)$", "", t) if "(updated" in t else None,
        lambda t: f"{t} (updated {rng.randint(2016, 2024)})",
        lambda t: f"{t.rstrip('.')}: {rng.choice(_WORDS)}" if t else rng.choice(_WORDS).title(),
    ]
    for fix in rng.sample(fixes, len(fixes)):
        new = fix(title)
        if new and new != title:
            return new
    return f"{title} (rev. {rng.randint(2, 99)})"


def _fixed_url(rng: random.Random, url: str | None, doc: int) -> str:
    url = url or ""
    if url.startswith("http://"):
        return "https://" + url[len("http://"):]
    if not url.startswith("https://"):
        return f"https://www.tripdatabase.com/doc/{doc}"
    return f"{url.rstrip('/')}/v{rng.randint(2, 9)}" if rng.random() < 0.5 else \
        f"https://www.tripdatabase.com/doc/{doc}?r={rng.randint(1, 10_000)}"


def _new_title(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS).capitalize()} of {rng.choice(_WORDS)} in {rng.choice(_WORDS)}"


class Editor:
    """Makes one edit at a time, each its own transaction (a CMS saving a page)."""

    def __init__(self, conn: psycopg.Connection, rng: random.Random) -> None:
        self.conn, self.rng = conn, rng
        self.ids = [row[0] for row in conn.execute(_SQL["catalog_ids"]).fetchall()]
        conn.commit()
        self.next_id = max(self.ids, default=0) + 1

    def edit(self) -> str:
        kind = self.rng.choices(list(EDITS), weights=list(EDITS.values()))[0]
        if not self.ids:
            kind = "create"
        with self.conn.transaction():
            getattr(self, f"_{kind}")()
        return kind

    def _pick(self) -> tuple[int, tuple[str | None, str | None, str | None]]:
        doc = self.rng.choice(self.ids)
        row = self.conn.execute(_SQL["catalog_row"], {"id": doc}).fetchone()
        return doc, (row[0], row[1], row[2]) if row else (None, None, None)

    def _title(self) -> None:
        doc, (title, url, doi) = self._pick()
        self.conn.execute(_SQL["edit_document"], {"id": doc, "title": _fixed_title(
            self.rng, title), "url": url, "doi": doi})

    def _url(self) -> None:
        doc, (title, url, doi) = self._pick()
        self.conn.execute(_SQL["edit_document"], {
            "id": doc, "title": title, "url": _fixed_url(self.rng, url, doc), "doi": doi})

    def _doi(self) -> None:
        doc, (title, url, _doi) = self._pick()
        self.conn.execute(_SQL["edit_document"], {
            "id": doc, "title": title, "url": url,
            "doi": f"10.{self.rng.randint(1000, 9999)}/trip.{doc}.{self.rng.randint(1, 999)}"})

    def _create(self) -> None:
        doc, self.next_id = self.next_id, self.next_id + 1
        self.conn.execute(_SQL["add_document"], {
            "id": doc, "title": _new_title(self.rng),
            "url": f"https://www.tripdatabase.com/doc/{doc}", "doi": None})
        self.ids.append(doc)

    def _delete(self) -> None:
        doc = self.ids.pop(self.rng.randrange(len(self.ids)))
        self.conn.execute(_SQL["delete_document"], {"id": doc})


def simulate(settings: Settings, *, rate: float = 5.0, duration: float = 10.0,
             seed: int | None = None, edits: int | None = None) -> SimulationSummary:
    """Edit the catalogue at `rate` edits/s for `duration` s (or exactly `edits` edits)."""
    if rate <= 0:
        raise ValueError("--rate must be positive")
    settings = services.resolve(settings, kafka=False)
    dsn = db.prepare(settings)
    summary = SimulationSummary()
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        editor = Editor(conn, random.Random(seed))
        n = 0
        while (edits is None and time.monotonic() - started < duration) or \
                (edits is not None and n < edits):
            summary.edits[editor.edit()] += 1
            n += 1
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


def catalogue_size(settings: Settings) -> int:
    """Documents in catalog.documents."""
    with psycopg.connect(db.prepare(settings)) as conn:
        row = conn.execute("select count(*) from catalog.documents").fetchone()
    return int(row[0]) if row else 0
