"""tripflow.lake's readers: DuckDB's own Parquet reader over a local Delta table's files
gives exactly what the Arrow dataset gives (rows, order, types, each row's date from the
Delta log), and anything it cannot read the same way goes the Arrow way."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from tripflow import lake

D1, D2 = dt.date(2016, 1, 1), dt.date(2016, 1, 2)
SCHEMA = pa.schema([
    pa.field("event_date", pa.date32()),
    pa.field("event_ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("value", pa.binary()),
    pa.field("areas", pa.list_(pa.string())),
])


def rows(day: dt.date | None, offsets: range) -> pa.Table:
    n = len(offsets)
    moment = dt.datetime.combine(day or D1, dt.time(12), dt.UTC)
    return pa.Table.from_arrays([
        pa.array([day] * n, pa.date32()),
        pa.array([moment + dt.timedelta(seconds=o) for o in offsets], pa.timestamp("us", "UTC")),
        pa.array(list(offsets), pa.int64()),
        pa.array([f"v{o}".encode() if o % 3 else None for o in offsets], pa.binary()),
        pa.array([["Cardiology", f"a{o}"] if o % 2 else None for o in offsets]),
    ], schema=SCHEMA)


@pytest.fixture
def table(tmp_path: Path) -> tuple[DeltaTable, str]:
    """Three appends over two dates and the null partition: several files per date."""
    uri = str(tmp_path / "t")
    for first in (0, 100, 200):
        batch = pa.concat_tables([rows(D1, range(first, first + 5)),
                                  rows(None, range(first + 5, first + 7)),
                                  rows(D2, range(first + 7, first + 10))])
        write_deltalake(uri, batch, mode="append", partition_by=["event_date"])
    return DeltaTable(uri), uri


COLUMNS = ["event_date", "event_ts", "offset", "value", "areas"]


def arrow_read(files: lake.FileSet, columns: list[str]) -> pa.Table:
    return lake.read_files(files).to_table(columns=columns, use_threads=False)


@pytest.mark.parametrize("dates", [None, [D1], [None], [D2, None]])
def test_duckdb_reads_local_files_as_the_arrow_dataset_does(
        table: tuple[DeltaTable, str], dates: list[dt.date | None] | None) -> None:
    files = lake.file_set(*table, dates)
    assert lake._hive_paths(files) is not None  # DuckDB's reader, not the fallback
    got = lake.read_columns(files, COLUMNS)
    assert got.schema == pa.schema([SCHEMA.field(c) for c in COLUMNS])
    assert got.equals(arrow_read(files, COLUMNS))
    every = {None: 6, D1: 15, D2: 9}  # rows per date of the three appends
    assert dict(_count_per_date(files)) == (every if dates is None else
                                            {day: every[day] for day in dates})
    assert lake.read_columns(files, ["offset"]).column("offset").to_pylist() == \
        arrow_read(files, ["offset"]).column("offset").to_pylist()


def _count_per_date(files: lake.FileSet) -> list[tuple[dt.date | None, int]]:
    with duckdb.connect() as connection:
        lake.duckdb_view(connection, "rows", files)
        return connection.sql("select event_date, count(*) from rows group by 1").fetchall()


def test_a_file_outside_its_dates_folder_is_read_the_arrow_way(
        table: tuple[DeltaTable, str]) -> None:
    """The date comes from the Delta log, not the folder name: a file whose folder says
    another date than its log entry (a layout tripflow does not write) is read with the
    log's date."""
    files = lake.file_set(*table, [D1])
    moved = dataclasses.replace(files, files=tuple((path, D2) for path, _ in files.files))
    assert lake._hive_paths(moved) is None
    got = lake.read_columns(moved, ["event_date", "offset"])
    assert set(got.column("event_date").to_pylist()) == {D2} and got.num_rows == 15
    assert _count_per_date(moved) == [(D2, 15)]


def test_no_files_and_object_stores_go_the_arrow_way(table: tuple[DeltaTable, str]) -> None:
    empty = lake.file_set(*table, [dt.date(2000, 1, 1)])
    assert lake._hive_paths(empty) is None
    got = lake.read_columns(empty, COLUMNS)
    assert got.num_rows == 0 and got.schema == pa.schema([SCHEMA.field(c) for c in COLUMNS])
    assert _count_per_date(empty) == []
    remote = dataclasses.replace(lake.file_set(*table), uri="s3://bucket/lake/t")
    assert lake._hive_paths(remote) is None


def test_an_unpartitioned_table_and_a_folder_named_like_a_glob(tmp_path: Path) -> None:
    plain = str(tmp_path / "plain")
    write_deltalake(plain, rows(D1, range(4)).drop_columns(["event_date"]))
    table = DeltaTable(plain)
    files = lake.file_set(table, plain)
    assert not files.partitioned and lake._hive_paths(files) is not None
    assert lake.read_columns(files, ["offset"]).column("offset").to_pylist() == [0, 1, 2, 3]
    # DuckDB would read [1] as a glob pattern (delta-rs cannot write there, but a copy can)
    assert lake._hive_paths(dataclasses.replace(files, uri=str(tmp_path / "lake[1]"))) is None


def test_files_are_listed_per_table_version_and_identity(
        table: tuple[DeltaTable, str], monkeypatch: pytest.MonkeyPatch) -> None:
    handle, uri = table
    assert len(lake.partition_files(handle)) == 9  # three appends of three partitions
    first = lake.partition_files(DeltaTable(uri, version=0))
    assert sorted((f.event_date or dt.date.min, f.rows) for f in first) == [
        (dt.date.min, 2), (D1, 5), (D2, 3)]
    # A write through the handle moves it on: its files are listed again.
    write_deltalake(handle, rows(D2, range(300, 304)), mode="append", partition_by=["event_date"])
    assert len(lake.partition_files(handle)) == 10
    assert len(lake.partition_files(DeltaTable(uri, version=2))) == 9
    # An earlier version, for changed dates, is opened and listed once per process.
    opened: list[int | None] = []

    class CountedTable(DeltaTable):
        def __init__(self, *args: Any, version: int | None = None, **kwargs: Any) -> None:
            opened.append(version)
            super().__init__(*args, version=version, **kwargs)

    monkeypatch.setattr(lake, "DeltaTable", CountedTable)
    assert lake.changed_dates(handle, 1) == {D1, D2, None}
    assert lake.changed_dates(handle, 1) == {D1, D2, None}
    assert lake.changed_dates(handle, 2) == {D2}
    assert opened == [1]  # version 2 was listed above
    # A table deleted and created again under the same path: its version 0 is another one.
    shutil.rmtree(uri)
    write_deltalake(uri, rows(D2, range(7)), partition_by=["event_date"])
    assert [(f.event_date, f.rows) for f in lake.partition_files(DeltaTable(uri))] == [(D2, 7)]


def test_tables_checkpoint_every_ten_commits_and_keep_app_transactions(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    for version in range(12):
        write_deltalake(uri, rows(D1, range(2 * version, 2 * version + 2)), mode="append",
                        partition_by=["event_date"], configuration=lake.TABLE_CONFIGURATION,
                        commit_properties=CommitProperties(
                            app_transactions=[Transaction("loader", 100 + version)]))
    log = tmp_path / "t" / "_delta_log"
    assert sorted(p.name for p in log.glob("*.checkpoint.parquet")) == [
        "00000000000000000009.checkpoint.parquet"]
    (log / "00000000000000000000.json").unlink()  # opening now starts at the checkpoint
    reopened = DeltaTable(uri)
    assert reopened.metadata().configuration == {"delta.checkpointInterval": "10"}
    assert reopened.transaction_version("loader") == 111  # bronze's exactly-once mark
    assert sum(f.rows for f in lake.partition_files(reopened)) == 24
