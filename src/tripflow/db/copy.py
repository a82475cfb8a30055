"""The one way tripflow loads Arrow into PostgreSQL: `copy_arrow(conn, table, data)`.

COPY with no Python per row, on the caller's psycopg connection and inside its
transaction (a mart's per-date replace is one transaction: readers see the old day or
the new, never half; staging tables are the session's temp tables).

The rows go in PostgreSQL's binary COPY format, built from Arrow columns by Arrow's
kernels (`encode`), whenever every target column's type is one `encode` supports (text, bytea,
date, timestamp(tz), int2/4/8, float8: every table tripflow loads); for other types
(arrays, boolean, numeric) as CSV written by Arrow: strings always quoted and nulls empty
and unquoted, which is exactly PostgreSQL's CSV distinction between '' and NULL.

Why this and not a library (`bench/bench_copy.py`, 1.5 M rows into a table with the
mart's primary key; rows/s, best of 3): mart_session_analysis-like rows (timestamps)
numpy binary 229 k, Arrow CSV 163 k, psycopg's own binary COPY (`write_row`) 91 k,
`adbc-driver-postgresql` ingest 244 k; mart_popular_documents-like rows (text-heavy)
462 k, 427 k, 295 k, 472 k. ADBC is within a few per cent, but it loads through its own
connection: it cannot join the caller's psycopg transaction (the per-date delete and the
COPY would be two transactions, and the COPY would wait forever on the rows the
caller's uncommitted delete locks), nor see its temp tables. psycopg's row COPY is 1.5–2.5
times slower. So the encoder stays, on psycopg's maintained COPY protocol. (Those figures
are from the numpy encoder before this one; at full scale the Arrow one encodes the
mart_popular_documents rows in 1.3 s instead of 5.1, byte for byte the same.)

Binary COPY: a header, then per row an int16 field count and per field an int32 byte
length (-1 = NULL) and the value in network byte order: int2/int4/int8/float8 as such,
date as int4 days since 2000-01-01, timestamp(tz) as int8 microseconds since 2000-01-01,
text and bytea as their bytes; then a trailer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from tripflow.records.rules import ONE_DAY_MS

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * ONE_DAY_MS * 1000

# PostgreSQL type (as `format_type` names it) -> how a value is encoded.
_FIXED = {
    "smallint": (pa.int16(), ">i2"),
    "integer": (pa.int32(), ">i4"),
    "bigint": (pa.int64(), ">i8"),
    "double precision": (pa.float64(), ">f8"),
}
_VARIABLE = {"text": pa.large_string(), "bytea": pa.large_binary()}
SUPPORTED = {*_FIXED, *_VARIABLE, "date", "timestamp with time zone",
             "timestamp without time zone"}

_CSV_BATCH_ROWS = 250_000
_BINARY_BATCH_ROWS = 100_000  # rows per encoded buffer handed to psycopg (≈ 15 MB for a mart)


def copy_arrow(conn: psycopg.Connection, table: str, data: pa.Table,
               pg_types: Sequence[str] | None = None) -> int:
    """COPY every row of `data` into `table` (`name` or `schema.name`; columns by name),
    in the caller's transaction. `pg_types`: each column's PostgreSQL type when the
    caller knows them (else read from the catalog). Returns the row count."""
    if data.num_rows == 0:
        return 0
    if pg_types is None:
        types = column_types(conn, table)
        pg_types = [types.get(name, "?") for name in data.column_names]
    if binary_supports(pg_types):
        return copy_binary(conn, table, data, pg_types)
    return copy_csv(conn, table, data)


def binary_supports(pg_types: Sequence[str]) -> bool:
    """True when `encode` can write every one of these column types."""
    return all(t in SUPPORTED for t in pg_types)


def column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """Column name -> PostgreSQL type name of a table (as the search path finds it; temp
    tables too)."""
    return dict(conn.execute(
        "select attname, format_type(atttypid, null) from pg_attribute "
        "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
        (table,)).fetchall())


def _copy_statement(table: str, columns: Sequence[str], form: str) -> sql.Composed:
    return sql.SQL("copy {} ({}) from stdin (format {})").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(form))


def copy_csv(conn: psycopg.Connection, table: str, data: pa.Table) -> int:
    """COPY `data` into `table` as CSV written by Arrow."""
    if data.num_rows == 0:
        return 0
    options = pacsv.WriteOptions(include_header=False)
    with conn.cursor() as cur, cur.copy(_copy_statement(table, data.column_names, "csv")) as copy:
        for batch in data.to_batches(max_chunksize=_CSV_BATCH_ROWS):
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            copy.write(buffer.getbuffer())
    return data.num_rows


def copy_binary(conn: psycopg.Connection, table: str, data: pa.Table,
                pg_types: Sequence[str]) -> int:
    """COPY `data` into `table` in binary; pg_types: each column's PostgreSQL type."""
    if data.num_rows == 0:
        return 0
    statement = _copy_statement(table, data.column_names, "binary")
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(HEADER)
        for batch in data.to_batches(max_chunksize=_BINARY_BATCH_ROWS):
            copy.write(encode(batch, pg_types))
        copy.write(TRAILER)
    return data.num_rows


def _fixed_values(column: pa.Array, pg_type: str) -> tuple[np.ndarray, int]:
    """(big-endian values as an (n, width) uint8 matrix, width) for a fixed-width type.
    Null slots hold 0 (their length field says NULL); filling first keeps int64 exact."""
    if pg_type == "date":
        days = pc.fill_null(column.cast(pa.date32()).cast(pa.int32()), 0)
        raw = (days.to_numpy().astype(np.int64) - _PG_EPOCH_DAYS).astype(">i4")
    elif pg_type.startswith("timestamp"):
        micros = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
        raw = (pc.fill_null(micros, 0).to_numpy() - _PG_EPOCH_US).astype(">i8")
    else:
        arrow_type, dtype = _FIXED[pg_type]
        raw = pc.fill_null(column.cast(arrow_type), 0).to_numpy().astype(dtype)
    width = raw.dtype.itemsize
    return raw.view(np.uint8).reshape(len(column), width), width


def _fields(matrix: np.ndarray) -> pa.Array:
    """One binary value per row from an (n, width) uint8 matrix (no copy until the cast)."""
    rows, width = matrix.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), rows, [None, pa.py_buffer(np.ascontiguousarray(matrix))])
    return fixed.cast(pa.large_binary())


def encode(batch: pa.RecordBatch, pg_types: Sequence[str]) -> memoryview:
    """The binary COPY rows of `batch` (no header/trailer); columns in table order, each
    encoded as its PostgreSQL type in `pg_types`.

    Each row's parts (field count, then per field its length and value) are binary
    columns; Arrow's `binary_join_element_wise` concatenates them row by row in C++, and
    the joined column's data buffer is the rows back to back. (Building the rows with
    numpy instead scattered every byte through an int64 index: 4× slower, 8× the memory.)
    """
    n = batch.num_rows
    if n == 0:
        return memoryview(b"")
    field_count = np.empty((n, 2), dtype=np.uint8)
    field_count[:] = np.array([len(pg_types)], dtype=">i2").view(np.uint8)
    parts = [_fields(field_count)]
    for column, pg_type in zip(batch.columns, pg_types, strict=True):
        valid = ~column.is_null().to_numpy(zero_copy_only=False)
        if pg_type in _VARIABLE:
            body = pc.fill_null(column.cast(_VARIABLE[pg_type]).cast(pa.large_binary()), b"")
            lengths = pc.binary_length(body).to_numpy()
        else:
            values, width = _fixed_values(column, pg_type)
            body = _fields(values)
            if not valid.all():  # a NULL is its length (-1) alone, no value bytes
                body = pc.if_else(pa.array(valid), body, pa.scalar(b"", pa.large_binary()))
            lengths = np.full(n, width)
        length_field = np.where(valid, lengths, -1).astype(">i4").view(np.uint8).reshape(n, 4)
        parts += [_fields(length_field), body]
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64, count=n + 1,
                            offset=rows.offset * 8)
    return memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]
