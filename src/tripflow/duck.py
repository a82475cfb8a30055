"""DuckDB connections from one in-memory database per process and thread count.

Opening a DuckDB database builds its catalog of built-in functions: ≈ 20 ms, every time.
A cursor on an open database is a connection of its own (its own registered tables, safe
to use in another thread) and costs well under 1 ms. A one-day batch step used to open
four or five databases (the marts' engine, its reads, each quality check): ≈ 0.1 s of a
command that takes about one.

The parser keeps one connection per thread: its macros are temporary, that connection's own.
"""

from __future__ import annotations

import os
import threading

import duckdb

_databases: dict[tuple[int, int | None], duckdb.DuckDBPyConnection] = {}
_lock = threading.Lock()


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A new connection to this process's database that runs queries on `threads`
    threads (None: DuckDB's default, every core). Close it when done; the database stays
    open for the next one. What it registers is its own, but a view it creates is
    shared: name tables with `register`."""
    key = (os.getpid(), threads)  # a forked child opens its own
    with _lock:
        database = _databases.get(key)
        if database is None:
            database = duckdb.connect(config={} if threads is None else {"threads": threads})
            _databases[key] = database
        connection = database.cursor()
    connection.execute("set enable_progress_bar = false")  # each connection's own setting
    return connection
