"""Reading day files, month files, folders and logs.tar.gz (spec: "Files")."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import tarfile
import tempfile
import tracemalloc
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


def shuffled_day_archive(path: Path, days: list[tuple[str, bytes]], order: list[int]) -> Path:
    """`days` (name, content) packed as logs/<name> in the given order of indexes."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for index in order:
            name, content = days[index]
            info = tarfile.TarInfo(f"logs/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_reverse_ordered_archive_yields_the_lines_of_the_in_order_one(tmp_path: Path) -> None:
    days = [
        ("2016-01.json", b'{"m": 1}\n'),
        ("2016-01-01.json", b'{"d": 1, "n": 1}\r\n[\n{"d": 1, "n": 2},\n'),
        ("2016-01-02.json", b'\xef\xbb\xbf{"d": 2}\n\n'),
        ("2016-01-03.json", b""),
        ("2016-01-04.json", b'{"d": 4}'),
    ]
    in_order = shuffled_day_archive(tmp_path / "in-order.tar.gz", days, [0, 1, 2, 3, 4])
    reverse = shuffled_day_archive(tmp_path / "reverse.tar.gz", days, [4, 3, 2, 1, 0])
    expected = [
        ("2016-01.json", b'{"m": 1}'),
        ("2016-01-01.json", b'{"d": 1, "n": 1}'),
        ("2016-01-01.json", b'{"d": 1, "n": 2},'),
        ("2016-01-02.json", b'{"d": 2}'),
        ("2016-01-04.json", b'{"d": 4}'),
    ]
    assert list(iter_day_files([in_order])) == expected
    assert list(iter_day_files([reverse])) == expected
    assert list(iter_day_files([reverse], spool_dir=tmp_path)) == expected
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "in-order.tar.gz", "reverse.tar.gz"
    ]  # fmt: skip


def poorly_compressible_day(day: int, size: int) -> bytes:
    """About `size` bytes of valid-looking click lines with random session ids and titles
    (zlib keeps about three quarters of them)."""
    rng = random.Random(day)
    noise = base64.b64encode(rng.randbytes(size)).replace(b"+", b"-").replace(b"/", b"_")
    lines, at = [], 0
    while at < size:
        session, title = noise[at : at + 24], noise[at + 24 : at + 24 + 200]
        at += 224
        lines.append(
            b'{"DateCreated": "/Date(%d)/", "SessionId": "%s", "DocumentId": %d, '
            b'"Title": "%s", "Documents": []}\n'
            % (1451606400000 + day * 86_400_000 + at, session, rng.randrange(10**7), title)
        )
    return b"".join(lines)


def read_digest(archive: Path) -> tuple[int, str]:
    digest, count = hashlib.blake2b(), 0
    for name, line in iter_day_files([archive]):
        digest.update(b"%s\0%s\0" % (name.encode(), line))
        count += 1
    return count, digest.hexdigest()


def test_out_of_order_archive_keeps_memory_bounded(tmp_path: Path) -> None:
    """Members that arrive before their turn wait on disk, not in memory: the reader's
    Python allocations stay far below what a reverse-ordered archive holds back."""
    days = [(f"2016-01-0{day}.json", poorly_compressible_day(day, 4 * 2**20)) for day in
            range(1, 9)]  # fmt: skip
    held_back = sum(len(content) for _name, content in days[1:])  # all but the first day
    in_order = shuffled_day_archive(tmp_path / "in-order.tar.gz", days, list(range(8)))
    reverse = shuffled_day_archive(tmp_path / "reverse.tar.gz", days, list(range(7, -1, -1)))
    del days

    expected = read_digest(in_order)
    tracemalloc.start()
    try:
        got = read_digest(reverse)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == expected
    assert expected[0] > 100_000
    assert peak < held_back / 4, f"peak {peak / 2**20:.1f} MiB of {held_back / 2**20:.0f} MiB"


def spool_files(folder: Path) -> list[str]:
    """Open files of this process under `folder` (a spool has no name: "#123 (deleted)")."""
    links = (os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink())
    return [link for link in links if link.startswith(f"{folder}/")]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_spool_is_in_the_given_folder_and_gone_when_reading_ends(tmp_path: Path) -> None:
    days = [(f"2016-01-0{day}.json", b'{"d": %d}\n' % day * 1000) for day in range(1, 4)]
    reverse = shuffled_day_archive(tmp_path / "reverse.tar.gz", days, [2, 1, 0])
    spool = tmp_path / "spool"
    spool.mkdir()

    lines = iter_day_files([reverse], spool_dir=spool)
    assert next(lines) == ("2016-01-01.json", b'{"d": 1}')
    assert len(spool_files(spool)) == 1  # the two later days wait there
    lines.close()  # a reader stopped early (an error, ^C) leaves nothing behind
    assert spool_files(spool) == []

    lines = iter_day_files([reverse], spool_dir=spool)
    assert sum(1 for _ in lines) == 3000
    assert spool_files(spool) == []
    assert list(spool.iterdir()) == []


def test_in_order_archive_spools_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spool(*args: object, **kwargs: object) -> None:
        raise AssertionError("an archive in date order needs no spool")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_spool)
    days = [(f"2016-01-0{day}.json", b'{"d": %d}\n' % day) for day in range(1, 4)]
    in_order = shuffled_day_archive(tmp_path / "in-order.tar.gz", days, [0, 1, 2])
    assert [line for _name, line in iter_day_files([in_order])] == [
        b'{"d": 1}', b'{"d": 2}', b'{"d": 3}'
    ]  # fmt: skip
