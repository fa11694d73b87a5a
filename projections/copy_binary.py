"""Rows in PostgreSQL's binary COPY format, made where they are prepared.

A replay's worker processes (projections/parallel.py) send the runner the rows of a range as
these bytes rather than as Python objects: the runner then neither unpickles nor encodes them
(``copy_records_to_table`` did both, in the one process that writes), and a range waiting
to be written holds one bytes object, not a list and a dozen objects per row. The format is
PostgreSQL's (the ``COPY`` page of its manual, "Binary Format"): a header, each row as its
field count and each field as its length (-1: NULL) and its value in the type's binary
send format, and a trailer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

Encoder = Callable[[Any], bytes]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_LENGTH = struct.Struct(">i").pack
_BIGINT = struct.Struct(">iq").pack
_INT = struct.Struct(">ii").pack
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # timestamptz counts microseconds from here
_MICROSECOND = timedelta(microseconds=1)


def uuid(value: UUID) -> bytes:
    return b"\x00\x00\x00\x10" + value.bytes


def text(value: str) -> bytes:
    data = value.encode()
    return _LENGTH(len(data)) + data


def bigint(value: int) -> bytes:
    return _BIGINT(8, value)


def integer(value: int) -> bytes:
    return _INT(4, value)


def timestamptz(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise ValueError("a timestamptz needs an aware datetime")
    return _BIGINT(8, (value - _EPOCH) // _MICROSECOND)


def encode(rows: Iterable[Sequence[Any]], types: Sequence[Encoder]) -> bytes:
    """The rows, each with one value per encoder (None: NULL), as one COPY ... (FORMAT
    binary) stream."""
    count = struct.pack(">h", len(types))
    out = [_HEADER]
    for row in rows:
        if len(row) != len(types):
            raise ValueError(f"a row of {len(row)} values for {len(types)} columns")
        out.append(count)
        out += [_NULL if v is None else enc(v) for v, enc in zip(row, types, strict=True)]
    out.append(_TRAILER)
    return b"".join(out)
