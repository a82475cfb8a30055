"""`allarticles.txt`: the document catalogue (spec: "Files").

Tab-separated `id, title, url`; a header line first, a footer `(N rows affected)` last.
Titles may hold tabs and newlines, so a record is a line starting with an integer id and
a tab, and every other line continues the record before it. The URL is the last
tab-separated field of a record and the title everything between the id and the URL.

How this module reads what the spec leaves open:
- Lines before the first record (the header, a `----` rule) are skipped, and so are
  blank lines and the footer when nothing but blank lines follows them.
- A record without a URL field, or with an empty one, has a null URL; malformed URLs
  (`_http…`, `ttp://…`, `file:///…`) are kept exactly as written.
- Line endings may be `\n` or `\r\n`; an embedded newline is kept in the title as `\n`.
- Text is UTF-8; undecodable bytes become U+FFFD rather than stopping the read.
"""

from __future__ import annotations

import codecs
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa

from tripflow.records.readers import is_archive

ARTICLES_SCHEMA = pa.schema(
    [
        pa.field("document_id", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("url", pa.string()),
    ]
)

ARTICLES_FILE_NAME = "allarticles.txt"
HEADER = "id\ttitle\turl"

# At most 18 digits, so that every id a line can start with fits int64.
_RECORD_START = re.compile(r"[0-9]{1,18}\t")
_FOOTER = re.compile(r"\([0-9]+ rows? affected\)")
_ROWS_PER_BATCH = 65_536

Article = tuple[int, str | None, str | None]


def _text_lines(binary: IO[bytes]) -> Iterator[str]:
    # Split on b"\n" only: a lone "\r" inside a title is not a line break.
    for number, line in enumerate(binary):
        if number == 0:
            line = line.removeprefix(codecs.BOM_UTF8)
        yield line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", errors="replace")


def _article(record_lines: list[str]) -> Article:
    id_text, rest = "\n".join(record_lines).split("\t", 1)
    title, tab, url = rest.rpartition("\t")
    if not tab:  # no URL field: everything after the id is the title
        title, url = rest, ""
    return int(id_text), title, url or None


def _articles(lines: Iterable[str]) -> Iterator[Article]:
    record: list[str] | None = None  # lines of the record being read
    held: list[str] = []  # blank or footer lines: content only if more content follows
    for line in lines:
        bare = line.strip(" ")  # not tabs: a lone tab can be an empty title or URL field
        if not bare or _FOOTER.fullmatch(bare):
            held.append(line)
            continue
        if _RECORD_START.match(line):
            if record is not None:
                yield _article(record)
            record = [line]
        elif record is not None:
            record += [*held, line]
        held = []  # before the first record, anything not a record is header
    if record is not None:
        yield _article(record)


def _table(articles: Iterable[Article]) -> pa.Table:
    batches: list[pa.RecordBatch] = []
    columns: tuple[list[int], list[str | None], list[str | None]] = ([], [], [])

    def flush() -> None:
        arrays = [
            pa.array(column, field.type)
            for column, field in zip(columns, ARTICLES_SCHEMA, strict=True)
        ]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=ARTICLES_SCHEMA))
        for column in columns:
            column.clear()

    for article in articles:
        for column, value in zip(columns, article, strict=True):
            column.append(value)
        if len(columns[0]) == _ROWS_PER_BATCH:
            flush()
    flush()
    return pa.Table.from_batches(batches, ARTICLES_SCHEMA)


def read_articles(source: str | Path | IO[bytes]) -> pa.Table:
    """The catalogue as a table (document_id, title, url), in file order.

    source: `allarticles.txt`, a `logs.tar.gz` holding it (read as a stream, never
    extracted), or a binary file object.
    """
    if not isinstance(source, str | Path):
        return _table(_articles(_text_lines(source)))
    path = Path(source)
    if not is_archive(path):
        with path.open("rb") as binary:
            return _table(_articles(_text_lines(binary)))
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            if member.isfile() and Path(member.name).name == ARTICLES_FILE_NAME:
                binary = tar.extractfile(member)
                assert binary is not None  # a regular file always has content
                return _table(_articles(_text_lines(binary)))
    raise FileNotFoundError(f"{path} holds no {ARTICLES_FILE_NAME}")


def _record_text(document_id: int, title: str | None, url: str | None) -> str:
    """One record as written, or ValueError when `read_articles` could not read it back."""
    title, url = title or "", url or ""
    if not 0 <= document_id < 10**18:
        raise ValueError(f"article id {document_id} is outside 0..10**18-1")
    if any(char in url for char in "\t\n\r"):
        raise ValueError(f"article {document_id}: a URL cannot hold a tab or line break")
    if "\r" in title or any(_RECORD_START.match(line) for line in title.split("\n")[1:]):
        raise ValueError(
            f"article {document_id}: a title line after a line break starts with "
            "'<digits><tab>' or the title holds '\\r', so it would not read back"
        )
    # Always write the URL field (empty for none): a title with a tab stays a title.
    return f"{document_id}\t{title}\t{url}\n"


def write_articles(rows: Iterable[Article] | pa.Table, target: str | Path | IO[bytes]) -> int:
    """Write articles in the `allarticles.txt` format; returns how many were written.

    rows: (document_id, title, url) tuples, or a table with those columns. A null title
    is written as "" and a null URL as an empty field (read back as null).
    """
    if isinstance(rows, pa.Table):
        rows = _table_rows(rows)
    if isinstance(target, str | Path):
        with Path(target).open("wb") as binary:
            return _write(rows, binary)
    return _write(rows, target)


def _table_rows(table: pa.Table) -> Iterator[Article]:
    for batch in table.select(ARTICLES_SCHEMA.names).to_batches():
        yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)


def _write(rows: Iterable[Article], binary: IO[bytes]) -> int:
    binary.write(f"{HEADER}\n".encode())
    count = 0
    for document_id, title, url in rows:
        binary.write(_record_text(document_id, title, url).encode("utf-8"))
        count += 1
    binary.write(f"({count} rows affected)\n".encode())
    return count
