"""tripflow.duck: one DuckDB database per process and thread count, a connection per use.
Each connection's tables stay its own (the lake's views included), connections work side
by side in threads, and a forked child opens its own database."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tripflow import duck, lake


def test_a_database_is_opened_once_per_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict[str, object]] = []
    real = duckdb.connect

    def counting(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        opened.append(dict(kwargs.get("config") or {}))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(duck, "_databases", {})
    monkeypatch.setattr(duckdb, "connect", counting)
    first, second, third = duck.connect(threads=1), duck.connect(threads=1), duck.connect(3)
    assert opened == [{"threads": 1}, {"threads": 3}]
    assert first is not second
    assert third.sql("select current_setting('threads')").fetchall() == [(3,)]
    # no progress bar on the user's terminal, whatever connection runs the query
    assert second.sql("select current_setting('enable_progress_bar')").fetchall() == [(False,)]
    first.close()
    assert second.sql("select 41 + 1").fetchall() == [(42,)]  # the database stays open


def test_registered_tables_are_each_connections_own() -> None:
    one, two = duck.connect(threads=1), duck.connect(threads=1)
    one.register("rows", pa.table({"x": [1, 2]}))
    two.register("rows", pa.table({"x": [1, 2, 3]}))
    assert one.sql("select count(*) from rows").fetchall() == [(2,)]
    assert two.sql("select count(*) from rows").fetchall() == [(3,)]


def test_lake_views_are_each_connections_own(tmp_path: Path) -> None:
    """Two checks may name their table `rows` at once: DuckDB's views are shared by every
    connection of a database, so `duckdb_view` must not make one."""
    files = []
    for name, count in (("a", 2), ("b", 5)):
        uri = str(tmp_path / name)
        write_deltalake(uri, pa.table({"event_date": [dt.date(2016, 1, 1)] * count,
                                       "n": list(range(count))}),
                        partition_by=["event_date"])
        files.append(lake.file_set(DeltaTable(uri), uri, None))
    one, two = duck.connect(), duck.connect()
    lake.duckdb_view(one, "rows", files[0])
    lake.duckdb_view(two, "rows", files[1])
    assert one.sql("select count(*), sum(n) from rows").fetchall() == [(2, 1)]
    assert two.sql("select count(*), sum(n) from rows").fetchall() == [(5, 10)]


def test_connections_work_side_by_side_in_threads() -> None:
    def total(n: int) -> int:
        with duck.connect(threads=1) as connection:
            connection.register("numbers", pa.table({"x": list(range(n))}))
            return connection.sql("select sum(x) from numbers").fetchall()[0][0]

    sizes = [1_000 + i for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(total, sizes)) == [n * (n - 1) // 2 for n in sizes]


def _child_sum(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with duck.connect(threads=1) as connection:
        queue.put(connection.sql("select sum(range) from range(10)").fetchall()[0][0])


def test_a_forked_child_opens_its_own_database() -> None:
    duck.connect(threads=1).sql("select 1").fetchall()  # the parent's database is open
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_sum, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 45
