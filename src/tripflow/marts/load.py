"""Loading marts into PostgreSQL: the per-date replace of a mart (delete the dates, COPY
the new rows with `tripflow.db.copy`) that the caller runs inside one transaction, so
readers see the old day or the new, never half."""

from __future__ import annotations

import datetime as dt

import psycopg
import pyarrow as pa
from psycopg import sql

from tripflow.db import sqlfiles
from tripflow.db.copy import column_types, copy_arrow

_SQL = sqlfiles.queries("marts", "load.sql")


def replace_dates(conn: psycopg.Connection, table: str, dates: list[dt.date],
                  data: pa.Table) -> tuple[int, int]:
    """Delete `dates` from `table` and COPY `data` (rows of those dates) in their place.
    Runs in the caller's transaction. Returns (rows deleted, rows inserted)."""
    deleted = conn.execute(
        sql.SQL("delete from {} where event_date = any(%s)").format(sql.Identifier(table)),
        (dates,),
    ).rowcount
    types = column_types(conn, table)
    return deleted, copy_arrow(conn, table, data, [types.get(n, "?") for n in data.column_names])


def primary_keys(conn: psycopg.Connection, tables: list[str]) -> dict[str, list[str]]:
    """The primary-key columns of these tables (schema public), in key order."""
    found: dict[str, list[str]] = {}
    for table, column in conn.execute(_SQL["primary_keys"], (tables,)):
        found.setdefault(table, []).append(column)
    return found
