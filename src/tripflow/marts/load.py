"""Loading Arrow tables into PostgreSQL: COPY with no Python per row — binary COPY built
with numpy (pgbinary) when every column's type allows it, else CSV written by Arrow — and
the per-date replace of a mart (delete the dates, COPY the new rows) that the caller runs
inside one transaction, so readers see the old day or the new, never half.

CSV from Arrow: strings are always quoted and nulls are empty and unquoted, which is
exactly PostgreSQL's CSV distinction between '' and NULL; timestamps carry a `Z`.
"""

from __future__ import annotations

import datetime as dt
import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from tripflow.marts import pgbinary

_BATCH_ROWS = 250_000
_BINARY_BATCH_ROWS = 100_000  # bounds numpy's per-byte index arrays for text columns


def copy_arrow(conn: psycopg.Connection, table: str | sql.Composable, data: pa.Table) -> int:
    """COPY every row of `data` into `table` (columns by name). Returns the row count."""
    if data.num_rows == 0:
        return 0
    target = sql.Identifier(*table.split(".")) if isinstance(table, str) else table
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        target, sql.SQL(", ").join(sql.Identifier(name) for name in data.column_names))
    options = pacsv.WriteOptions(include_header=False)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for batch in data.to_batches(max_chunksize=_BATCH_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            copy.write(buffer.getbuffer())
    return data.num_rows


def column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """Column name -> information_schema data_type, for a table of schema public."""
    return dict(conn.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'public' and table_name = %s", (table,)).fetchall())


def copy_binary(conn: psycopg.Connection, table: str, data: pa.Table,
                pg_types: list[str]) -> int:
    """COPY `data` into `table` in binary; pg_types: each column's PostgreSQL type."""
    if data.num_rows == 0:
        return 0
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(n) for n in data.column_names))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(pgbinary.HEADER)
        for batch in data.to_batches(max_chunksize=_BINARY_BATCH_ROWS):
            copy.write(pgbinary.encode(batch, pg_types))
        copy.write(pgbinary.TRAILER)
    return data.num_rows


def replace_dates(conn: psycopg.Connection, table: str, dates: list[dt.date],
                  data: pa.Table) -> tuple[int, int]:
    """Delete `dates` from `table` and COPY `data` (rows of those dates) in their place.
    Runs in the caller's transaction. Returns (rows deleted, rows inserted)."""
    deleted = conn.execute(
        sql.SQL("delete from {} where event_date = any(%s)").format(sql.Identifier(table)),
        (dates,),
    ).rowcount
    types = column_types(conn, table)
    pg_types = [types.get(name, "?") for name in data.column_names]
    # Binary pays off for timestamps (slow as text both ways); for text-heavy rows Arrow's
    # CSV writer is faster than building binary rows with numpy.
    if any(t.startswith("timestamp") for t in pg_types) and all(
            t in pgbinary.SUPPORTED for t in pg_types):
        return deleted, copy_binary(conn, table, data, pg_types)
    return deleted, copy_arrow(conn, table, data)


def primary_keys(conn: psycopg.Connection, tables: list[str]) -> dict[str, list[str]]:
    """The primary-key columns of these tables (schema public), in key order."""
    found: dict[str, list[str]] = {}
    for table, column in conn.execute(
        """select c.relname, a.attname
           from pg_index i
           join pg_class c on c.oid = i.indrelid
           join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)
           where i.indisprimary and n.nspname = 'public' and c.relname = any(%s)
           order by c.relname, array_position(i.indkey::int2[], a.attnum)""",
        (tables,),
    ):
        found.setdefault(table, []).append(column)
    return found
