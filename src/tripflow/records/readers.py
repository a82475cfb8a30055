"""Reading the TripClick log files: day files, month files, folders and `logs.tar.gz`.

`iter_day_files` yields every record line of the given paths, files in date order,
streaming line by line (a folder or a file is never read whole). A `logs.tar.gz` is
read as a stream (`tarfile` mode "r|*"), never extracted to disk.

Date order and archives: a gzip stream cannot seek, and archives made with `tar czf`
follow directory order, which is not date order. So an archive is read twice: a first
pass lists its members, a second yields them in date order. A member that arrives
before its turn is held in memory, zlib-compressed, until then; an archive already in
date order (the usual case) holds nothing.
"""

from __future__ import annotations

import codecs
import io
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO

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


class _ArchiveReader:
    """Second pass over one archive: hands out members in the order asked for."""

    def __init__(self, tar: tarfile.TarFile, archive: Path) -> None:
        self._tar = tar
        self._members = iter(tar)
        self._early: dict[str, bytes] = {}  # member name -> zlib-compressed content
        self._archive = archive

    def open(self, name: str) -> IO[bytes]:
        """The member's content; read it fully before asking for the next member."""
        if name in self._early:
            return io.BytesIO(zlib.decompress(self._early.pop(name)))
        for member in self._members:
            if member.name == name:
                content = self._tar.extractfile(member)
                assert content is not None  # the listing pass kept regular files only
                return content
            if member.isfile() and _log_file_key(Path(member.name).name) is not None:
                # Wanted later: keep it until its turn (cheap level: speed over size).
                content = self._tar.extractfile(member)
                assert content is not None
                self._early[member.name] = zlib.compress(content.read(), 1)
        raise FileNotFoundError(f"{name} vanished from {self._archive} between two reads")


def _record_lines(name: str, content: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    for number, line in enumerate(content):
        if number == 0:  # a file saved by a Windows tool may start with a byte-order mark
            line = line.removeprefix(codecs.BOM_UTF8)
        line = line.rstrip(b"\r\n")
        if line.startswith(b"{") or not _NO_RECORD.fullmatch(line):
            yield name, line


def iter_day_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, bytes]]:
    """(file name, line) for every record line of the given day files, month files,
    folders of them and `logs.tar.gz` archives, files in date order.

    Lines come without their line ending; blank lines and lines holding only array
    brackets or commas are skipped. In folders and archives, other names
    (`allarticles.txt`, ...) are skipped; a file named explicitly only needs a date in
    its name. A date present in two places is read from both, in a stable order.
    """
    archives: dict[Path, _ArchiveReader] = {}
    with ExitStack() as open_archives:
        for log_file in _collect(paths):
            name = Path(log_file.member or log_file.source).name
            if log_file.member is None:
                with log_file.source.open("rb") as content:
                    yield from _record_lines(name, content)
                continue
            reader = archives.get(log_file.source)
            if reader is None:
                tar = open_archives.enter_context(tarfile.open(log_file.source, "r|*"))
                reader = archives[log_file.source] = _ArchiveReader(tar, log_file.source)
            with closing(reader.open(log_file.member)) as content:
                yield from _record_lines(name, content)
