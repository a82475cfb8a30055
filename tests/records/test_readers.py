"""Reading day files, month files, folders and logs.tar.gz (spec: "Files")."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tripflow.records.readers import iter_day_files, list_day_files

SAMPLE_FILE = Path(__file__).resolve().parents[3] / "shared/data/tripclick_sample_2016-01-01.jsonl"


def write(path: Path, *lines: bytes, ending: bytes = b"\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + ending for line in lines))
    return path


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_folder_files_come_in_date_order_and_other_names_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "2016-01-03.json", b'{"day": 3}')
    write(tmp_path / "2016-01-01.json", b'{"day": 1, "n": 1}', b'{"day": 1, "n": 2}')
    write(tmp_path / "2015-12-31.json", b'{"day": 0}')
    write(tmp_path / "sub" / "2016-01-02.json", b'{"day": 2}')
    write(tmp_path / "allarticles.txt", b"id\ttitle\turl")
    write(tmp_path / "notes.json", b"{}")
    write(tmp_path / "2016-13-01.json", b'{"bad": "date"}')
    write(tmp_path / "2016-01-04.json.bak", b"{}")

    assert list(iter_day_files([tmp_path])) == [
        ("2015-12-31.json", b'{"day": 0}'),
        ("2016-01-01.json", b'{"day": 1, "n": 1}'),
        ("2016-01-01.json", b'{"day": 1, "n": 2}'),
        ("2016-01-02.json", b'{"day": 2}'),
        ("2016-01-03.json", b'{"day": 3}'),
    ]
    assert [path.name for path in list_day_files(tmp_path)] == [
        "2015-12-31.json", "2016-01-01.json", "2016-01-02.json", "2016-01-03.json"
    ]  # fmt: skip


def test_month_file_sorts_by_its_first_day_before_that_days_file(tmp_path: Path) -> None:
    write(tmp_path / "2016-02-01.json", b'{"f": "day"}')
    write(tmp_path / "2016-02.json", b'{"f": "month"}')
    write(tmp_path / "2016-01-31.json", b'{"f": "jan"}')
    assert [name for name, _line in iter_day_files([tmp_path])] == [
        "2016-01-31.json", "2016-02.json", "2016-02-01.json"
    ]  # fmt: skip


def test_blank_and_bracket_lines_are_skipped_and_endings_stripped(tmp_path: Path) -> None:
    write(
        tmp_path / "2016-01-01.json",
        b"[",
        b'{"a": 1},',
        b"",
        b"   ",
        b'{"a": 2}',
        b"]",
        ending=b"\r\n",
    )
    assert list(iter_day_files([tmp_path / "2016-01-01.json"])) == [
        ("2016-01-01.json", b'{"a": 1},'),
        ("2016-01-01.json", b'{"a": 2}'),
    ]


def test_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    (tmp_path / "2016-01-01.json").write_bytes(b'{"a": 1}\n{"a": 2}')
    assert [line for _name, line in iter_day_files([tmp_path])] == [b'{"a": 1}', b'{"a": 2}']


def test_explicit_file_needs_a_date_in_its_name(tmp_path: Path) -> None:
    lines = list(iter_day_files([SAMPLE_FILE]))
    assert len(lines) == 34
    assert lines[0] == (SAMPLE_FILE.name, SAMPLE_FILE.read_bytes().splitlines()[0])
    undated = write(tmp_path / "clicks.jsonl", b"{}")
    with pytest.raises(ValueError, match="date order"):
        list(iter_day_files([undated]))
    with pytest.raises(FileNotFoundError):
        list(iter_day_files([tmp_path / "missing.json"]))


def make_archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_archive_is_streamed_in_date_order_without_extracting(tmp_path: Path) -> None:
    archive = make_archive(
        tmp_path / "logs.tar.gz",
        [
            ("logs/2016-01-03.json", b'{"d": 3}\n'),
            ("logs/allarticles.txt", b"id\ttitle\turl\n1\tA\thttp://a\n(1 rows affected)\n"),
            ("logs/2016-01-01.json", b'{"d": 1}\n\n{"d": 1.5}\n'),
            ("logs/2016-01.json", b'{"m": 1}\n'),
            ("logs/2016-01-02.json", b'{"d": 2}\n'),
            ("logs/readme.md", b"hello\n"),
        ],
    )
    before = listing(tmp_path)
    lines = list(iter_day_files([archive]))
    assert listing(tmp_path) == before == ["logs.tar.gz"]
    assert lines == [
        ("2016-01.json", b'{"m": 1}'),
        ("2016-01-01.json", b'{"d": 1}'),
        ("2016-01-01.json", b'{"d": 1.5}'),
        ("2016-01-02.json", b'{"d": 2}'),
        ("2016-01-03.json", b'{"d": 3}'),
    ]


def test_archive_and_folder_are_merged_by_date(tmp_path: Path) -> None:
    archive = make_archive(
        tmp_path / "logs.tar.gz",
        [("2016-01-01.json", b'{"from": "tar"}\n'), ("2016-01-03.json", b'{"from": "tar"}\n')],
    )
    folder = tmp_path / "more"
    write(folder / "2016-01-02.json", b'{"from": "folder"}')
    assert list(iter_day_files([archive, folder])) == [
        ("2016-01-01.json", b'{"from": "tar"}'),
        ("2016-01-02.json", b'{"from": "folder"}'),
        ("2016-01-03.json", b'{"from": "tar"}'),
    ]


def test_reading_is_lazy(tmp_path: Path) -> None:
    write(tmp_path / "2016-01-01.json", b'{"a": 1}', b'{"a": 2}')
    lines = iter_day_files([tmp_path])
    assert next(lines) == ("2016-01-01.json", b'{"a": 1}')
    (tmp_path / "2016-01-02.json").write_bytes(b'{"late": true}\n')  # listed already: unseen
    assert list(lines) == [("2016-01-01.json", b'{"a": 2}')]


def test_byte_order_mark_of_a_file_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "2016-01-01.json").write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert [line for _name, line in iter_day_files([tmp_path])] == [b'{"a": 1}', b'{"a": 2}']
