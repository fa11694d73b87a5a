"""What a clinic's sender reads of times on its edge node: a stored message's time or a
receipt's ``received_at`` (RFC 3339, nanoseconds from the server), and how `hie edge status`
words what the receipts say of the clinic's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from adapters.nats import stored_at
from exchange.cli.edge import clock_words

BEIJING = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2026-12-06T01:02:03.123456789Z", datetime(2026, 12, 6, 1, 2, 3, 123456, UTC)),
        ("2026-12-06T01:02:03Z", datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)),
        ("2026-12-06T09:02:03.5+08:00", datetime(2026, 12, 6, 9, 2, 3, 500000, BEIJING)),
        ("2026-12-06T01:02:03.000001+00:00", datetime(2026, 12, 6, 1, 2, 3, 1, UTC)),
    ],
)
def test_a_stored_time_keeps_its_offset(text: str, at: datetime) -> None:
    found = stored_at(text)
    assert found == at and found is not None and found.utcoffset() == at.utcoffset()


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", None, 12])
def test_anything_else_is_no_time(text: object) -> None:
    assert stored_at(text) is None


def test_the_clinics_clock_is_told_as_far_as_its_receipts_can_say() -> None:
    assert clock_words(-1260.0) == (
        "this clock is at least 21 min behind the exchange's: set it right"
    )
    assert clock_words(-12.4) == "this clock is at least 12 s behind the exchange's"
    assert clock_words(0.3) == "this clock is at most 0 s ahead of the exchange's"
