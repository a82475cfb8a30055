"""The one way tripflow loads Arrow into PostgreSQL: `copy_arrow(conn, table, data)`.

COPY with no Python per row, on the caller's psycopg connection and inside its
transaction (a mart's per-date replace is one transaction: readers see the old day or
the new, never half; staging tables are the session's temp tables).

The rows go in PostgreSQL's binary COPY format, built from Arrow columns with numpy
(`encode`), whenever every target column's type is one `encode` supports (text, bytea,
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
times slower. So the encoder stays, on psycopg's maintained COPY protocol.

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
_BINARY_BATCH_ROWS = 100_000  # bounds numpy's per-byte index arrays for text columns


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


def _variable_values(column: pa.Array, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data bytes) of a text/bytea column; nulls hold zero bytes."""
    arrow_type = _VARIABLE[pg_type]
    values = pc.fill_null(column.cast(arrow_type), pa.scalar(b"" if pg_type == "bytea" else "",
                                                             arrow_type))
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64,
                            count=len(values) + 1, offset=values.offset * 8)
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if offsets[-1] > offsets[0] \
        else np.empty(0, np.uint8)
    return offsets, data


def encode(batch: pa.RecordBatch, pg_types: Sequence[str]) -> bytes:
    """The binary COPY rows of `batch` (no header/trailer); columns in table order, each
    encoded as its PostgreSQL type in `pg_types`."""
    n = batch.num_rows
    columns = []
    for column, pg_type in zip(batch.columns, pg_types, strict=True):
        valid = ~column.is_null().to_numpy(zero_copy_only=False)
        if pg_type in _VARIABLE:
            offsets, data = _variable_values(column, pg_type)
            lengths = np.diff(offsets)
            columns.append(("variable", valid, lengths, (offsets, data)))
        else:
            values, width = _fixed_values(column, pg_type)
            columns.append(("fixed", valid, np.where(valid, width, 0), values))
    sizes = np.full(n, 2, dtype=np.int64)
    for _, _, lengths, _ in columns:
        sizes += 4 + lengths
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = np.zeros(int(sizes.sum()), dtype=np.uint8)
    field_count = np.array([len(columns)], dtype=">i2").view(np.uint8)
    out[starts] = field_count[0]
    out[starts + 1] = field_count[1]
    at = starts + 2  # where each row's next field begins
    for kind, valid, lengths, payload in columns:
        length_field = np.where(valid, lengths, -1).astype(">i4").view(np.uint8).reshape(n, 4)
        out[at[:, None] + np.arange(4)] = length_field
        body = at + 4
        if kind == "fixed":
            width = payload.shape[1]
            rows = np.flatnonzero(valid)
            out[body[rows, None] + np.arange(width)] = payload[rows]
        else:
            offsets, data = payload
            if offsets[-1] > offsets[0]:
                # Byte j of the column's data goes to its row's body + (j - row's offset).
                shift = np.repeat(body - offsets[:-1], lengths)
                out[shift + np.arange(offsets[0], offsets[-1])] = data[offsets[0]:offsets[-1]]
        at = body + lengths
    return out.tobytes()
