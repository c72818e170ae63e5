"""PostgreSQL binary ``COPY`` to and from numpy arrays: the one codec of the format in Relevé.

A binary COPY row is a 16-bit field count, then per field a 32-bit length and the value, all
big-endian. When every column has a fixed width and is never NULL (``coalesce`` in the query), a
row has a fixed size and the whole body is one numpy record array: no Python per row. Build the
record type with :func:`row_dtype`; read ``COPY … TO STDOUT (FORMAT binary)`` with
:func:`copy_records` (or :func:`copy_blocks`); write ``COPY … FROM STDIN (FORMAT binary)`` with
:func:`new_rows` (the field count and lengths filled in), the values set by name, then
:func:`encode`.

Fixed-width PostgreSQL types and their numpy codes: ``int2`` ``>i2``, ``int4`` / ``date`` ``>i4``
(a ``date`` is days since 2000-01-01), ``int8`` / ``timestamptz`` ``>i8`` (microseconds since
2000-01-01 UTC), ``float4`` ``>f4``, ``float8`` ``>f8``, ``bool`` ``>u1``.
"""

from __future__ import annotations

import select
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import errors, pq

#: The header before the first row: signature (11 bytes), flags (4) and header extension length (4).
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
HEADER_BYTES = len(HEADER)
#: The trailer after the last row: a field count of −1.
TRAILER = b"\xff\xff"
TRAILER_BYTES = len(TRAILER)
#: PostgreSQL's epoch (2000-01-01 UTC) in Unix seconds.
PG_EPOCH_S = 946_684_800.0
#: PostgreSQL's epoch as a day number since 1970-01-01.
PG_EPOCH_DAYS = 10_957
#: PostgreSQL's epoch as a numpy instant (UTC, naive in numpy).
PG_EPOCH_US = np.datetime64("2000-01-01T00:00:00", "us")


def row_dtype(*fields: tuple[str, str]) -> np.dtype:
    """The record type of one binary COPY row of fixed-width, non-NULL columns.

    ``row_dtype(("meter_id", ">i4"), ("ts", ">i8"))`` — the field count and each field's length
    word are added (named ``n``, ``l1``, ``l2``…).
    """
    spec: list[tuple[str, str]] = [("n", ">i2")]
    for k, (name, code) in enumerate(fields, start=1):
        spec += [(f"l{k}", ">i4"), (name, code)]
    return np.dtype(spec)


def pg_micros(ts: np.ndarray) -> np.ndarray:
    """UTC instants (numpy ``datetime64``, naive) as a binary ``timestamptz``: microseconds since 2000-01-01."""
    return (ts.astype("datetime64[us]") - PG_EPOCH_US).astype(np.int64)


def new_rows(dtype: np.dtype, n: int) -> np.ndarray:
    """``n`` rows of a :func:`row_dtype` record type to fill for a binary ``COPY … FROM STDIN``.

    The field count and every field's length word are set; the values are left to the caller.
    """
    rec = np.empty(n, dtype)
    names = dtype.names or ()
    rec[names[0]] = len(names) // 2  # the field count, then (length, value) per field
    for length, value in zip(names[1::2], names[2::2], strict=True):
        rec[length] = dtype[value].itemsize
    return rec


def encode(rec: np.ndarray, first: bool = True, last: bool = True) -> bytes:
    """Rows from :func:`new_rows` as a binary ``COPY`` payload.

    A payload sent in pieces carries the header only before its first row (``first``) and the
    trailer only after its last (``last``).
    """
    return (HEADER if first else b"") + rec.tobytes() + (TRAILER if last else b"")


def _messages(conn: psycopg.Connection, query: str | bytes, params: Any = None) -> Iterator[memoryview]:
    """The CopyData messages of one ``COPY … TO STDOUT``, read straight from libpq.

    The server sends one message per row; psycopg's ``Copy`` iteration costs about 10 µs of Python
    per message (20 s for 2 million rows on a loaded machine), this loop a fraction of one.
    Each view owns its message's buffer (libpq's, freed when the view goes), so views may be kept
    past the next message: :func:`copy_blocks` joins a block's worth at once.
    """
    with conn.cursor().copy(query, params) as copy:
        pgconn = conn.pgconn
        while True:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes > 0:
                yield data
            elif nbytes == 0:  # nothing buffered yet: wait for the socket
                select.select([pgconn.socket], [], [], 1.0)
                pgconn.consume_input()
            else:
                break
        while (result := pgconn.get_result()) is not None:
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise errors.error_from_result(result, encoding=conn.info.encoding)
        copy._finished = True  # the final result is read: nothing left for psycopg to wait for


def copy_bytes(conn: psycopg.Connection, query: str | bytes, params: Any = None) -> bytes:
    """The raw output of one ``COPY (…) TO STDOUT (FORMAT binary)``."""
    buf = bytearray()
    for data in _messages(conn, query, params):
        buf += data
    return bytes(buf)


def decode(buf: bytes, dtype: np.dtype) -> np.ndarray:
    """The rows of a binary COPY output as a record array of ``dtype`` (a read-only view of ``buf``)."""
    n = (len(buf) - HEADER_BYTES - TRAILER_BYTES) // dtype.itemsize
    if n <= 0:
        return np.zeros(0, dtype)
    return np.frombuffer(buf, dtype, count=n, offset=HEADER_BYTES)


_INT2 = struct.Struct(">h")
_INT4 = struct.Struct(">i")
#: numpy codes of fixed-width scalars and their struct codes.
_STRUCT_CODES = {">i2": ">h", ">i4": ">i", ">i8": ">q", ">f4": ">f", ">f8": ">d", ">u1": ">B"}
#: The PostgreSQL types (OIDs) an array's elements may have for each numpy code.
_ELEMENT_TYPES = {
    ">i2": {21},  # int2
    ">i4": {23, 1082},  # int4, date
    ">i8": {20, 1114, 1184},  # int8, timestamp, timestamptz
    ">f4": {700},  # float4
    ">f8": {701},  # float8
    ">u1": {16},  # bool
}
#: A one-dimensional array's header: dimensions, has-NULLs flag, element type, length, lower bound.
_ARRAY_HEAD = struct.Struct(">iiIii")


def copy_arrays(conn: psycopg.Connection, query: str | bytes, params: Any, codes: Sequence[str]) -> list[list[Any]]:
    """Run a binary COPY of fixed-width scalars and one-dimensional arrays; return its columns.

    ``codes`` names each column's type: a numpy code (``">i4"``) for a scalar, the code followed by
    ``[]`` (``">f8[]"``) for an array of such elements (no NULL element). Column ``k`` of the result
    holds one value per row: a Python number for a scalar, a numpy array (a view of the COPY's
    output) for an array. Aggregating a series into arrays in the query (``array_agg``) sends one
    row per series instead of one per value, so there is a Python step per series, not per value.
    """
    buf = copy_bytes(conn, query, params)
    scalar = {c: struct.Struct(_STRUCT_CODES[c]) for c in codes if not c.endswith("[]")}
    element = {c: np.dtype([("length", ">i4"), ("value", c[:-2])]) for c in codes if c.endswith("[]")}
    columns: list[list[Any]] = [[] for _ in codes]
    p, end = HEADER_BYTES, len(buf) - TRAILER_BYTES
    while p < end:
        (fields,) = _INT2.unpack_from(buf, p)
        if fields != len(codes):
            raise ValueError(f"binary COPY row at byte {p} has {fields} columns, expected {len(codes)}")
        p += 2
        for k, code in enumerate(codes):
            (length,) = _INT4.unpack_from(buf, p)
            p += 4
            if length < 0:
                raise ValueError(f"binary COPY column {k + 1} is NULL at byte {p}: coalesce it in the query")
            if code in element:
                dims, nulls, oid, n, _ = _ARRAY_HEAD.unpack_from(buf, p) if length >= 20 else (0, 0, 0, 0, 0)
                if dims > 1 or nulls:
                    raise ValueError(
                        f"binary COPY column {k + 1} at byte {p}: not a one-dimensional array without NULLs"
                    )
                if dims and oid not in _ELEMENT_TYPES[code[:-2]]:
                    raise ValueError(f"binary COPY column {k + 1}: elements of type OID {oid} cannot be read as {code}")
                value = element[code]
                columns[k].append(
                    np.frombuffer(buf, value, count=n, offset=p + 20)["value"] if dims else np.zeros(0, value["value"])
                )
            else:
                columns[k].append(scalar[code].unpack_from(buf, p)[0])
            p += length
    return columns


def copy_blocks(
    conn: psycopg.Connection, query: str | bytes, params: Any, dtype: np.dtype, block_rows: int = 1 << 20
) -> Iterator[np.ndarray]:
    """Run a binary COPY whose columns match ``dtype`` and yield its rows ``block_rows`` at a time.

    Only one block of raw output is held at once: the caller keeps what it needs of each (a block
    is a read-only view of the block's bytes). The messages of a block are joined once (a row of a
    few kB, the hourly series', is one message: appending each to a growing buffer, then slicing
    and copying the block out of it, copied every byte three times).
    """
    size = dtype.itemsize
    parts: list[Any] = []
    have = 0
    offset = HEADER_BYTES
    for data in _messages(conn, query, params):
        parts.append(data)
        have += len(data)
        if have - offset >= block_rows * size:
            buf = b"".join(parts)
            n = (len(buf) - offset) // size
            yield np.frombuffer(buf, dtype, count=n, offset=offset)
            rest = buf[offset + n * size :]
            parts, have, offset = [rest], len(rest), 0
    buf = b"".join(parts)
    n = (len(buf) - offset - TRAILER_BYTES) // size
    if n > 0:
        yield np.frombuffer(buf, dtype, count=n, offset=offset)


def copy_records(conn: psycopg.Connection, query: str | bytes, params: Any, dtype: np.dtype) -> np.ndarray:
    """Run a binary COPY whose columns match ``dtype`` (:func:`row_dtype`) and return its rows."""
    return decode(copy_bytes(conn, query, params), dtype)
