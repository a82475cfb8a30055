"""PostgreSQL's binary COPY format, built from Arrow columns with numpy (no Python per row).

Why: in text/CSV COPY, timestamps cost more than everything else (Arrow formats them
slowly, PostgreSQL parses them slowly); in binary they are 8 bytes each way. A row is an
int16 field count, then per field an int32 byte length (-1 = NULL) and the value in
network byte order: int2/int4/int8/float8 as such, date as int4 days since 2000-01-01,
timestamp(tz) as int8 microseconds since 2000-01-01, text as UTF-8 bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000

# PostgreSQL type (information_schema data_type) -> how a value is encoded.
_FIXED = {
    "smallint": (pa.int16(), ">i2"),
    "integer": (pa.int32(), ">i4"),
    "bigint": (pa.int64(), ">i8"),
    "double precision": (pa.float64(), ">f8"),
}
SUPPORTED = {*_FIXED, "date", "timestamp with time zone", "timestamp without time zone", "text"}


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


def encode(batch: pa.RecordBatch, pg_types: list[str]) -> bytes:
    """The binary COPY rows of `batch` (no header/trailer); columns in table order, each
    encoded as its PostgreSQL type in `pg_types`."""
    n = batch.num_rows
    columns = []
    for column, pg_type in zip(batch.columns, pg_types, strict=True):
        valid = ~column.is_null().to_numpy(zero_copy_only=False)
        if pg_type == "text":
            text = column.cast(pa.large_string())
            text = pc.fill_null(text, "")  # nulls: zero bytes, length -1 below
            offsets = np.frombuffer(text.buffers()[1], dtype=np.int64,
                                    count=len(text) + 1, offset=text.offset * 8)
            data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if offsets[-1] > offsets[0] \
                else np.empty(0, np.uint8)
            lengths = np.diff(offsets)
            columns.append(("text", valid, lengths, (offsets, data)))
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
            total = int(offsets[-1] - offsets[0])
            if total:
                # Byte j of the column's data goes to its row's body + (j - row's offset).
                shift = np.repeat(body - offsets[:-1], lengths)
                out[shift + np.arange(offsets[0], offsets[-1])] = data[offsets[0]:offsets[-1]]
        at = body + lengths
    return out.tobytes()
