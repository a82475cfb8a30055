"""`tripflow articles PATH`: load `allarticles.txt` (or a `logs.tar.gz` holding it).

The catalogue goes to PostgreSQL (`tripflow.articles`, replaced in one transaction, and
the operational table `catalog.documents`, upserted in the same one), then
to the lake (`reference/articles`, replaced whole): the lake table existing means a
catalogue is loaded. The mart engine takes `mart_popular_documents` titles from the lake
for a large run (read once, with the current dimension's titles applied once, sorted by
id for a binary search per group) and from PostgreSQL's primary key for a small one (a
day's few thousand documents: no full scan of 2.3 M titles). An id listed twice keeps its
first record. After loading, rebuild the marts (`tripflow marts --dates …`) for titles of dates
already built to change.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from deltalake import write_deltalake

from tripflow import db, lake, services
from tripflow.cdc import catalog
from tripflow.db import sqlfiles
from tripflow.db.copy import copy_arrow
from tripflow.processing.runlog import logged_run
from tripflow.records.articles import read_articles
from tripflow.settings import Settings


@dataclass
class ArticlesSummary:
    path: str
    records: int  # read from the file
    articles: int  # distinct ids stored
    seconds: float

    def line(self) -> str:
        return (f"articles: {self.records:,} records read from {self.path}, "
                f"{self.articles:,} distinct documents loaded in {self.seconds:.1f} s")


def first_per_id(table: pa.Table) -> pa.Table:
    """The first record of every document id, in file order."""
    rows = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    firsts = rows.group_by("document_id", use_threads=False).aggregate([("_row", "min")])
    keep = pc.sort_indices(firsts.column("_row_min"))
    return table.take(pc.take(firsts.column("_row_min"), keep))


def load_articles(settings: Settings, path: str | Path) -> ArticlesSummary:
    """Replace the loaded catalogue with the one in `path`."""
    started = time.monotonic()
    settings = services.resolve(settings, kafka=False)  # once: nothing below starts a service
    dsn = db.prepare(settings)
    with logged_run(dsn, "articles", None) as stats:
        table = read_articles(path)
        articles = first_per_id(table)
        with db.connect(settings) as conn, conn.transaction():
            conn.execute("delete from tripflow.articles")
            copy_arrow(conn, "tripflow.articles", articles)
            # The operational catalogue too: an upsert, so only documents that changed
            # make change events (tripflow.cdc captures them).
            stats.extra["catalog_changed"] = catalog.upsert(conn, articles)
        write_deltalake(lake.table_uri(settings, lake.ARTICLES), articles, mode="overwrite",
                        schema_mode="overwrite", configuration=lake.TABLE_CONFIGURATION,
                        storage_options=lake.storage_options(settings))
        stats.rows_in, stats.rows_out = table.num_rows, articles.num_rows
        stats.detail = f"from {path}"
    return ArticlesSummary(str(path), table.num_rows, articles.num_rows,
                           time.monotonic() - started)


# Titles: the current version in dim_documents (the catalogue as editors keep it, through
# change data capture) when it has a non-blank one, else the loaded allarticles.txt's.
_TITLES = sqlfiles.queries("marts", "articles.sql")
# Up to this many distinct documents, titles come from PostgreSQL by primary key.
_LOOKUP_DOCUMENTS = 50_000


class LoadedArticles:
    """The loaded catalogue, read per group of documents (only the titles a run needs)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        table = lake.open_table(settings, lake.ARTICLES)
        self.dataset = (lake.dataset(table, lake.table_uri(settings, lake.ARTICLES))
                        if table is not None else None)
        self.everything: pa.Table | None = None  # final titles, sorted by document_id
        self._sorted_ids: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        return self.dataset is not None

    def read_all(self) -> None:
        """Keep every final title in memory, sorted by id: cheaper than one filtered read
        and one dimension query per group when a run covers many documents (a backfill).
        The current dimension's titles are applied once, here."""
        if self.dataset is None or self.everything is not None:
            return
        catalogue = self.dataset.to_table(columns=["document_id", "title"])
        with db.connect(self.settings) as conn:
            catalogue = _with_current(catalogue, _all_current_titles(conn))
        self.everything = catalogue.take(pc.sort_indices(catalogue.column("document_id")))
        self._sorted_ids = self.everything.column("document_id").to_numpy()

    def for_documents(self, document_ids: pa.Array | pa.ChunkedArray) -> pa.Table | None:
        """(document_id, title) of (at least) these documents; None when no catalogue is
        loaded."""
        if self.dataset is None:
            return None
        wanted = pc.unique(document_ids).drop_null()
        if self.everything is not None and self._sorted_ids is not None:
            # A binary search per wanted id in the sorted catalogue: a hash lookup of
            # every catalogue row (millions) per group cost seconds over a backfill.
            # Sorted ids search 7 times faster (numpy narrows each search by the last).
            ids = np.sort(wanted.to_numpy())
            at = np.searchsorted(self._sorted_ids, ids)
            inside = at < len(self._sorted_ids)
            at, ids = at[inside], ids[inside]
            return self.everything.take(pa.array(at[self._sorted_ids[at] == ids]))
        if len(wanted) <= _LOOKUP_DOCUMENTS:
            with db.connect(self.settings) as conn:
                found = conn.execute(_TITLES["titles"], {"ids": wanted.to_pylist()}).fetchall()
            return _table(found)
        listed = self.dataset.to_table(columns=["document_id", "title"],
                                       filter=pc.field("document_id").isin(wanted))
        with db.connect(self.settings) as conn:
            found = conn.execute(_TITLES["current_titles"],
                                 {"ids": wanted.to_pylist()}).fetchall()
        return _with_current(listed, _table(found))


def _with_current(listed: pa.Table, current: pa.Table) -> pa.Table:
    """The catalogue's `listed` titles with the dimension's `current` ones winning, also for
    documents the catalogue does not list (the rule `titles` in articles.sql applies)."""
    if not current.num_rows:
        return listed
    keep = pc.invert(pc.is_in(listed.column("document_id"),
                              value_set=current.column("document_id")))
    return pa.concat_tables([listed.filter(keep), current.cast(listed.schema)])


def _all_current_titles(conn: psycopg.Connection) -> pa.Table:
    """Every non-blank current title of dim_documents, by COPY (up to the whole
    catalogue when change data capture keeps it)."""
    data = io.BytesIO()
    with conn.cursor().copy(_TITLES["all_current_titles"]) as copy:
        for chunk in copy:
            data.write(chunk)
    data.seek(0)
    if not data.getbuffer().nbytes:
        return _table([])
    return pa_csv.read_csv(
        data,
        read_options=pa_csv.ReadOptions(column_names=["document_id", "title"]),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={"document_id": pa.int64(), "title": pa.string()},
            quoted_strings_can_be_null=False))


def _table(rows: list[tuple[int, str | None]]) -> pa.Table:
    return pa.table({"document_id": pa.array([r[0] for r in rows], pa.int64()),
                     "title": pa.array([r[1] for r in rows], pa.string())})
