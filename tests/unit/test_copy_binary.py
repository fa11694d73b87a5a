"""PostgreSQL's binary COPY format as the replay workers write it (PostgreSQL's own reading
of it is tested in tests/integration/test_projection_replay.py)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from projections import copy_binary as pg

TYPES = (pg.uuid, pg.text, pg.bigint, pg.integer, pg.timestamptz)
ID = UUID("12345678-1234-5678-1234-567812345678")


def test_a_row_is_its_field_count_then_each_field_as_length_and_value() -> None:
    at = datetime(2000, 1, 2, 8, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))  # 00:00:00.000005Z
    data = pg.encode([(ID, "血常规", 2**40, -3, at), (ID, None, 1, 0, None)], TYPES)
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
    assert data.endswith(b"\xff\xff")
    body = data[19:-2]
    name = "血常规".encode()
    first = (
        struct.pack(">h", 5)
        + struct.pack(">i", 16)
        + ID.bytes
        + struct.pack(">i", len(name))
        + name
        + struct.pack(">iq", 8, 2**40)
        + struct.pack(">ii", 4, -3)
        + struct.pack(">iq", 8, 86_400_000_005)
    )
    second = struct.pack(">h", 5) + struct.pack(">i", 16) + ID.bytes + struct.pack(">i", -1)
    second += struct.pack(">iq", 8, 1) + struct.pack(">ii", 4, 0) + struct.pack(">i", -1)
    assert body == first + second


def test_times_before_2000_count_back() -> None:
    assert pg.timestamptz(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)) == struct.pack(
        ">iq", 8, -1_000_000
    )


def test_a_row_of_the_wrong_width_or_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="a row of 4 values for 5 columns"):
        pg.encode([(ID, "x", 1, 2)], TYPES)
    with pytest.raises(ValueError, match="aware"):
        pg.encode([(ID, "x", 1, 2, datetime(2026, 1, 1))], TYPES)


def test_no_rows_is_the_header_and_the_trailer_and_another_encoder_is_called_per_value() -> None:
    assert pg.encode([], TYPES) == b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"

    def boolean(value: bool) -> bytes:
        return struct.pack(">ib", 1, value)

    data = pg.encode([(ID, True), (ID, None), (ID, False)], (pg.uuid, boolean))
    field = struct.pack(">h", 2) + struct.pack(">i", 16) + ID.bytes
    assert data[19:-2] == (
        field
        + struct.pack(">ib", 1, 1)
        + field
        + struct.pack(">i", -1)
        + field
        + struct.pack(">ib", 1, 0)
    )
