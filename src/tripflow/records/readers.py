"""Reading the TripClick log files: day files, month files, folders and `logs.tar.gz`.

`iter_log_lines` yields every record line of the given paths with its file and line
number (`iter_day_files`: without the number), files in date order, streaming line by
line (a folder or a file is never read whole). A `logs.tar.gz` is read as a stream
(`tarfile` mode "r|*"), never extracted to disk.

Date order and archives: a gzip stream cannot seek, and archives made with `tar czf`
follow directory order, which is not date order. So an archive is read twice: a first
pass lists its members, a second yields them in date order. A member that arrives
before its turn is spooled to disk until then: one temporary file per archive (in
`spool_dir`, by default the system's temporary folder), written sequentially and
zlib-compressed (level 1: about a fifth of the text), deleted when reading ends, stops
early or fails. Memory stays at a few MB of buffers whatever the order and sizes of the
members; an archive already in date order (the usual case) spools nothing.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import tarfile
import tempfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

_DAY_FILE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\.json")
_MONTH_FILE = re.compile(r"([0-9]{4})-([0-9]{2})\.json")
# An explicitly named file only needs a date somewhere in its name (e.g. the sample
# file "tripclick_sample_2016-01-01.jsonl").
_DATE_IN_NAME = re.compile(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Lines without a record: blank, or only the brackets/commas of an array-style file.
_NO_RECORD = re.compile(rb"[\s\[\],]*")


def _date_or_none(year: str, month: str, day: str | None) -> date | None:
    try:
        return date(int(year), int(month), int(day or 1))
    except ValueError:
        return None


def _log_file_key(name: str) -> tuple[date, int, str] | None:
    """Sort key of a log file's name, or None when the name is not `YYYY-MM-DD.json` or
    `YYYY-MM.json`. A month file sorts by its first day, before that day's file."""
    if match := _DAY_FILE.fullmatch(name):
        day = _date_or_none(*match.groups())
        return None if day is None else (day, 1, name)
    if match := _MONTH_FILE.fullmatch(name):
        first_day = _date_or_none(*match.groups(), None)
        return None if first_day is None else (first_day, 0, name)
    return None


def _named_file_key(name: str) -> tuple[date, int, str] | None:
    """Sort key of a file the caller named: a log file name, or any name with a date."""
    if (key := _log_file_key(name)) is not None:
        return key
    if match := _DATE_IN_NAME.search(name):
        year, month, day = match.groups()
        if (first_day := _date_or_none(year, month, day)) is not None:
            return (first_day, 0 if day is None else 1, name)
    return None


def is_archive(path: Path) -> bool:
    """Whether a path names a tar archive (`logs.tar.gz`), by its suffix."""
    return path.name.endswith(_TAR_SUFFIXES)


@dataclass(frozen=True, order=True)
class _LogFile:
    """One file to read: a file on disk, or a member of an archive."""

    key: tuple[date, int, str]
    source: Path = field(compare=False)
    member: str | None = field(default=None, compare=False)  # path inside the archive


def _folder_log_files(folder: Path) -> list[_LogFile]:
    return sorted(
        _LogFile(key, path)
        for path in folder.rglob("*.json")
        if path.is_file() and (key := _log_file_key(path.name)) is not None
    )


def list_day_files(folder: str | Path) -> list[Path]:
    """The day and month files under `folder` (sub-folders included), in date order."""
    return [log_file.source for log_file in _folder_log_files(Path(folder))]


def _archive_members(archive: Path) -> list[_LogFile]:
    """First pass over an archive: its log files (decompresses, keeps only names)."""
    with tarfile.open(archive, "r|*") as tar:
        return [
            _LogFile(key, archive, member.name)
            for member in tar
            if member.isfile() and (key := _log_file_key(Path(member.name).name)) is not None
        ]


def _collect(paths: Iterable[str | Path]) -> list[_LogFile]:
    found: list[_LogFile] = []
    for given in map(Path, paths):
        if not given.exists():
            raise FileNotFoundError(f"no such file or folder: {given}")
        if given.is_dir():
            found += _folder_log_files(given)
        elif is_archive(given):
            found += _archive_members(given)
        else:
            key = _named_file_key(given.name)
            if key is None:
                raise ValueError(
                    f"cannot place {given} in date order: its name holds no YYYY-MM-DD or "
                    "YYYY-MM date (log files are named YYYY-MM-DD.json or YYYY-MM.json)"
                )
            found.append(_LogFile(key, given))
    return sorted(found)


_CHUNK = 1 << 20  # bytes copied to or from the spool at a time
_SPOOL_LEVEL = 1  # zlib level of the spool (1: fastest; the spool is read back once)


class _SpooledMember(io.RawIOBase):
    """One member read back from the spool: its compressed bytes, read with `os.pread`
    (the spool's own position, where writes go, stays put), inflated a buffer at a time."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        super().__init__()
        self._fd, self._at, self._end = fd, start, end
        self._inflate = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            compressed = self._inflate.unconsumed_tail
            if not compressed and self._at < self._end:
                compressed = os.pread(self._fd, min(_CHUNK, self._end - self._at), self._at)
                if not compressed:
                    raise OSError("the spool of an archive's early members was cut short")
                self._at += len(compressed)
            data = self._inflate.decompress(compressed, len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            if self._at >= self._end and not self._inflate.unconsumed_tail:
                if not self._inflate.eof:
                    raise OSError("the spool of an archive's early members was cut short")
                return 0


class _Spool:
    """Members of one archive that arrived before their turn, kept on disk until then.

    One temporary file (no name on Linux; deleted when closed, and by the system if the
    process dies), written sequentially: each member one zlib stream, read back through a
    buffer when its turn comes. Memory stays at a few buffers, whatever the sizes."""

    def __init__(self, folder: Path | None) -> None:
        # Closed by close(), which the ExitStack of iter_log_lines calls.
        self._file = tempfile.TemporaryFile(  # noqa: SIM115
            prefix="tripflow-spool-", dir=folder, buffering=0
        )
        self._places: dict[str, deque[tuple[int, int]]] = {}  # name -> (start, end)s

    def keep(self, name: str, content: IO[bytes]) -> None:
        start = self._file.tell()
        deflate = zlib.compressobj(_SPOOL_LEVEL)
        while chunk := content.read(_CHUNK):
            self._file.write(deflate.compress(chunk))
        self._file.write(deflate.flush())
        self._places.setdefault(name, deque()).append((start, self._file.tell()))

    def take(self, name: str) -> IO[bytes] | None:
        places = self._places.get(name)
        if not places:
            return None
        start, end = places.popleft()
        raw = _SpooledMember(self._file.fileno(), start, end)
        return io.BufferedReader(raw, buffer_size=64 * 1024)

    def close(self) -> None:
        self._file.close()


class _ArchiveReader:
    """Second pass over one archive: hands out members in the order asked for."""

    def __init__(self, tar: tarfile.TarFile, archive: Path, spool_dir: Path | None) -> None:
        self._tar = tar
        self._members = iter(tar)
        self._archive = archive
        self._spool_dir = spool_dir
        self._spool: _Spool | None = None  # made when a member first arrives early

    def open(self, name: str) -> IO[bytes]:
        """The member's content; read it fully before asking for the next member."""
        if self._spool is not None and (spooled := self._spool.take(name)) is not None:
            return spooled
        for member in self._members:
            if not member.isfile() or _log_file_key(Path(member.name).name) is None:
                continue
            content = self._tar.extractfile(member)
            assert content is not None  # a regular file
            if member.name == name:
                return content
            if self._spool is None:  # wanted later: keep it on disk until its turn
                self._spool = _Spool(self._spool_dir)
            self._spool.keep(member.name, content)
        raise FileNotFoundError(f"{name} vanished from {self._archive} between two reads")

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


@dataclass
class LineCounts:
    """What a reading skipped: lines holding no record (blank, or only array punctuation
    `[`, `]`, `,`), counted so that every line of the input is accounted for."""

    no_record: int = 0


# (file name, line number in that file counting from 1, the line without its ending)
LogLine = tuple[str, int, bytes]


def _record_lines(name: str, content: Iterable[bytes],
                  counts: LineCounts | None) -> Iterator[LogLine]:
    for number, line in enumerate(content, 1):
        if number == 1:  # a file saved by a Windows tool may start with a byte-order mark
            line = line.removeprefix(codecs.BOM_UTF8)
        line = line.rstrip(b"\r\n")
        if line.startswith(b"{") or not _NO_RECORD.fullmatch(line):
            yield name, number, line
        elif counts is not None:
            counts.no_record += 1


def iter_day_files(
    paths: Iterable[str | Path], *, spool_dir: str | Path | None = None
) -> Iterator[tuple[str, bytes]]:
    """(file name, line) for every record line of the given day files, month files,
    folders of them and `logs.tar.gz` archives, files in date order: `iter_log_lines`
    without line numbers."""
    for name, _number, line in iter_log_lines(paths, spool_dir=spool_dir):
        yield name, line


def iter_log_lines(
    paths: Iterable[str | Path], counts: LineCounts | None = None, *,
    spool_dir: str | Path | None = None,
) -> Iterator[LogLine]:
    """(file name, line number, line) for every record line of the given day files, month
    files, folders of them and `logs.tar.gz` archives, files in date order.

    Lines come without their line ending; blank lines and lines holding only array
    brackets or commas are skipped (and counted in `counts`). In folders and archives,
    other names (`allarticles.txt`, ...) are skipped; a file named explicitly only needs a
    date in its name. A date present in two places is read from both, in a stable order.
    `spool_dir` is where an archive's early members wait (see the module's docstring).
    """
    spool = None if spool_dir is None else Path(spool_dir)
    archives: dict[Path, _ArchiveReader] = {}
    with ExitStack() as open_archives:
        for log_file in _collect(paths):
            name = Path(log_file.member or log_file.source).name
            if log_file.member is None:
                with log_file.source.open("rb") as content:
                    yield from _record_lines(name, content, counts)
                continue
            reader = archives.get(log_file.source)
            if reader is None:
                tar = open_archives.enter_context(tarfile.open(log_file.source, "r|*"))
                reader = _ArchiveReader(tar, log_file.source, spool)
                archives[log_file.source] = open_archives.enter_context(closing(reader))
            with closing(reader.open(log_file.member)) as content:
                yield from _record_lines(name, content, counts)
