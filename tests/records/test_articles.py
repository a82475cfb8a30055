"""allarticles.txt: reading, writing and the round trip between them (spec: "Files")."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest

from tripflow.records.articles import ARTICLES_SCHEMA, read_articles, write_articles

HAND_WRITTEN = (
    b"id\ttitle\turl\r\n"
    b"1\tPlain title\thttp://example.org/1\r\n"
    b"2\tTitle with\ta tab\thttps://example.org/2\r\n"
    b"3\tTitle across\r\n"
    b"two lines\t_http://example.org/3\r\n"
    b"4\tTitle with\r\n"
    b"\r\n"
    b"a blank line inside\tttp://example.org/4\r\n"
    b"5\tNo URL field at all\r\n"
    b"6\tEmpty URL field\t\r\n"
    b"7\t\tfile:///C:/docs/7.pdf\r\n"
    b"8\tCaf\xc3\xa9 and bad \xff byte\thttp://example.org/8\r\n"
    b"(8 rows affected)\r\n"
    b"\r\n"
    b"\r\n"
)
EXPECTED = [
    {"document_id": 1, "title": "Plain title", "url": "http://example.org/1"},
    {"document_id": 2, "title": "Title with\ta tab", "url": "https://example.org/2"},
    {"document_id": 3, "title": "Title across\ntwo lines", "url": "_http://example.org/3"},
    {"document_id": 4, "title": "Title with\n\na blank line inside", "url": "ttp://example.org/4"},
    {"document_id": 5, "title": "No URL field at all", "url": None},
    {"document_id": 6, "title": "Empty URL field", "url": None},
    {"document_id": 7, "title": "", "url": "file:///C:/docs/7.pdf"},
    {"document_id": 8, "title": "Café and bad \ufffd byte", "url": "http://example.org/8"},
]

TRICKY_ROWS = [
    (10, "Tabs\tin\tthe title", "http://a.org/10"),
    (11, "Lines\nin the\n\ntitle", "_http://a.org/11"),
    (12, "A title with a tab\tand no URL", None),
    (13, "Ends with a line break\n", "ttp://a.org/13"),
    (14, "Mentions\n(3 rows affected)\nin the title", "file:///x/14"),
    (15, "", "http://a.org/15"),
    (16, "Line two\n(2 rows affected)", None),
    (17, "Trailing tab\t", "http://a.org/17"),
    (9_000_000, "Ünïcödé ✓", "http://a.org/ü"),
]


def test_hand_written_example_parses_exactly(tmp_path: Path) -> None:
    path = tmp_path / "allarticles.txt"
    path.write_bytes(HAND_WRITTEN)
    table = read_articles(path)
    assert table.schema == ARTICLES_SCHEMA
    assert table.to_pylist() == EXPECTED
    assert read_articles(io.BytesIO(HAND_WRITTEN)).to_pylist() == EXPECTED


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "allarticles.txt"
    assert write_articles(TRICKY_ROWS, path) == len(TRICKY_ROWS)
    text = path.read_text("utf-8")
    assert text.startswith("id\ttitle\turl\n")
    assert text.endswith(f"\n({len(TRICKY_ROWS)} rows affected)\n")
    back = read_articles(path)
    assert [tuple(row.values()) for row in back.to_pylist()] == TRICKY_ROWS


def test_write_accepts_a_table_and_a_file_object() -> None:
    table = pa.Table.from_pylist(EXPECTED, schema=ARTICLES_SCHEMA)
    buffer = io.BytesIO()
    assert write_articles(table, buffer) == len(EXPECTED)
    assert read_articles(io.BytesIO(buffer.getvalue())).equals(table)


def test_large_catalogue_spans_several_batches() -> None:
    rows = [(index, f"Title {index}\nline", f"http://a.org/{index}") for index in range(70_000)]
    buffer = io.BytesIO()
    write_articles(rows, buffer)
    table = read_articles(io.BytesIO(buffer.getvalue()))
    assert table.num_rows == 70_000
    assert table.slice(65_535, 2).to_pylist() == [
        {"document_id": 65_535, "title": "Title 65535\nline", "url": "http://a.org/65535"},
        {"document_id": 65_536, "title": "Title 65536\nline", "url": "http://a.org/65536"},
    ]


@pytest.mark.parametrize(
    "row",
    [
        (1, "Line one\n42\tlooks like a record", "http://a.org"),
        (2, "carriage\rreturn", "http://a.org"),
        (3, "title", "http://a.org/\tx"),
        (4, "title", "http://a.org/\nx"),
        (-5, "title", "http://a.org"),
    ],
)
def test_rows_that_would_not_read_back_are_refused(row: tuple[int, str, str]) -> None:
    with pytest.raises(ValueError, match=str(row[0])):
        write_articles([row], io.BytesIO())


def test_read_from_inside_the_archive_without_extracting(tmp_path: Path) -> None:
    archive = tmp_path / "logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in [
            ("logs/2016-01-01.json", b'{"a": 1}\n'),
            ("logs/allarticles.txt", HAND_WRITTEN),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    assert read_articles(archive).to_pylist() == EXPECTED
    assert [path.name for path in tmp_path.iterdir()] == ["logs.tar.gz"]


def test_archive_without_catalogue_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("2016-01-01.json")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(FileNotFoundError, match=r"allarticles\.txt"):
        read_articles(archive)


def test_byte_order_mark_and_no_header() -> None:
    content = b"\xef\xbb\xbf1\tFirst\thttp://a.org/1\n2\tSecond\thttp://a.org/2\n"
    assert read_articles(io.BytesIO(content)).to_pylist() == [
        {"document_id": 1, "title": "First", "url": "http://a.org/1"},
        {"document_id": 2, "title": "Second", "url": "http://a.org/2"},
    ]
