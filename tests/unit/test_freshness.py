"""When a submission may arrive: its sent_at against the exchange's clock and the policy, or,
sent through a village clinic's edge node, against the edge's stamp (the clinic's clock); and
what the stamp, and the edge's own measurement from its receipts, say of the clinic's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.freshness import (
    SKEW_LIMIT,
    IngestPolicy,
    clock_skew,
    clock_warning,
    freshness_problems,
    held_at_edge,
    parse_offset,
    parse_stamp,
    stamp_problem,
)
from exchange.errors import ConfigurationError
from exchange.policy_file import load_ingest_policy
from tests.factories import clock_offsets, edge_outages

NOW = datetime(2026, 12, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "codes"),
    [
        (timedelta(0), []),
        (timedelta(minutes=5), []),  # a clock at the limit ahead
        (timedelta(minutes=5, seconds=1), ["envelope.sent_at_future"]),
        (-timedelta(days=30), []),  # a clinic offline for the whole allowed time
        (-timedelta(days=30, seconds=1), ["envelope.sent_at_stale"]),
    ],
)
def test_sent_at_limits(offset: timedelta, codes: list[str]) -> None:
    found = freshness_problems(NOW + offset, NOW, IngestPolicy())
    assert [p.code for p in found] == codes
    assert all(p.field == "sent_at" for p in found)


def test_the_message_names_the_limit_and_what_to_do() -> None:
    [stale] = freshness_problems(NOW - timedelta(days=8), NOW, IngestPolicy(timedelta(days=7)))
    assert "7 days" in stale.message and "new submission id" in stale.message


def test_the_policy_file_sets_both_limits(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    assert load_ingest_policy(path) == IngestPolicy()  # no file: the defaults
    path.write_text('[ingest]\nmax_submission_age = "45d"\nmax_clock_ahead = "2m"\n')
    assert load_ingest_policy(path) == IngestPolicy(timedelta(days=45), timedelta(minutes=2))
    path.write_text("[access]\n")
    assert load_ingest_policy(path) == IngestPolicy()


@pytest.mark.parametrize(
    "text",
    [
        '[ingest]\nmax_submission_age = "forever"\n',
        '[ingest]\nmax_clock_ahead = "-5m"\n',
        '[ingest]\nmax_age = "30d"\n',
        'ingest = "30d"\n',
    ],
)
def test_an_ingest_policy_that_cannot_work_fails_loudly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        load_ingest_policy(path)


# Through an edge node -------------------------------------------------------------------------

# The exchange receives a submission its edge took six weeks ago: by the exchange's clock alone
# it would be stale, whatever sent_at says.
STAMP = NOW - timedelta(weeks=6)


@pytest.mark.parametrize(
    ("offset", "codes"),
    [
        (timedelta(0), []),
        (timedelta(minutes=5), []),  # signed at the limit after the edge took it
        (timedelta(minutes=5, seconds=1), ["envelope.sent_at_future"]),
        (-timedelta(days=30), []),  # signed the whole allowed age before the edge took it
        (-timedelta(days=30, seconds=1), ["envelope.sent_at_stale"]),
    ],
)
def test_with_a_stamp_both_limits_count_from_it(offset: timedelta, codes: list[str]) -> None:
    found = freshness_problems(STAMP + offset, NOW, IngestPolicy(), STAMP)
    assert [p.code for p in found] == codes
    assert all(p.field == "sent_at" for p in found)
    assert all("the clinic's edge" in p.message for p in found)


def test_a_stamp_at_the_moment_received_decides_as_the_exchange_clock_does() -> None:
    def codes(sent_at: datetime, stamp: datetime | None) -> list[str]:
        return [p.code for p in freshness_problems(sent_at, NOW, IngestPolicy(), stamp)]

    for offset in (timedelta(minutes=6), -timedelta(days=31), timedelta(0)):
        assert codes(NOW + offset, NOW) == codes(NOW + offset, None)


@given(outage=edge_outages, signed_before=st.integers(0, 86_400))
def test_an_outage_of_any_length_with_a_right_clock_is_accepted_and_not_flagged(
    outage: timedelta, signed_before: int
) -> None:
    """A clinic whose clock is right, offline for up to 60 days: its edge took the submission
    when it was made (up to a day after it was signed), and the exchange receives it when the
    link returns."""
    stamp = NOW - outage
    sent_at = stamp - timedelta(seconds=signed_before)
    assert freshness_problems(sent_at, NOW, IngestPolicy(), stamp) == []
    assert clock_skew(stamp, NOW) is None
    # The edge's receipts came down at once while linked: its measure of its clock is ~0.
    assert clock_skew(stamp, NOW, timedelta(seconds=0.3)) is None
    assert held_at_edge(stamp, NOW) == outage


@given(
    offset=clock_offsets,
    latency=st.integers(0, 2_000_000),
    signed_before=st.integers(0, 600),
    queued=st.integers(0, 7 * 86_400),
    down=st.integers(0, 2_000_000),
)
def test_a_clinic_clock_off_either_way_is_accepted_and_flagged_when_off(
    offset: timedelta, latency: int, signed_before: int, queued: int, down: int
) -> None:
    """A clinic whose clock is off by up to half a day either way: it signs and its edge
    stamps on that clock; the submission may wait at the edge, and the exchange receives it a
    moment after the link returns. The edge's own measure, from a receipt that came down
    ``down`` microseconds after the exchange wrote it, is the clock's offset plus that."""
    received = NOW + timedelta(microseconds=latency)
    stamp = NOW + offset - timedelta(seconds=queued)
    sent_at = stamp - timedelta(seconds=signed_before)
    assert freshness_problems(sent_at, received, IngestPolicy(), stamp) == []
    # From the stamp alone: flagged only when it is ahead (queued time hides a slow clock).
    alone = clock_skew(stamp, received)
    if stamp - received > SKEW_LIMIT:
        assert alone == stamp - received and alone > SKEW_LIMIT
    else:
        assert alone is None
    # With the edge's measure: a slow clock is flagged too, never by more than it is off.
    reported = offset + timedelta(microseconds=down)
    both = clock_skew(stamp, received, reported)
    if alone is not None:
        assert both == alone
    elif reported < -SKEW_LIMIT:
        assert both == reported and offset <= both < -SKEW_LIMIT
    else:
        assert both is None


def test_a_reported_offset_the_stamp_disproves_is_not_believed() -> None:
    # The stamp says the clinic's clock is at least in step; the edge says an hour slow.
    assert clock_skew(NOW, NOW, -timedelta(hours=1)) is None
    assert clock_skew(NOW - timedelta(hours=1), NOW, -timedelta(hours=1)) == -timedelta(hours=1)
    assert [parse_offset(r) for r in ("-3600.5", "12", "", "nan?", "1e400", "9" * 30)] == [
        timedelta(seconds=-3600.5),
        timedelta(seconds=12),
        None,
        None,
        None,
        None,
    ]
    warning = clock_warning(-timedelta(minutes=21))
    assert warning.code == "edge.clock_behind"
    assert "21 minutes behind" in warning.message


def test_an_hour_fast_clinic_is_accepted_and_flagged_an_hour_ahead() -> None:
    stamp = sent_at = NOW + timedelta(hours=1)
    assert freshness_problems(sent_at, NOW, IngestPolicy(), stamp) == []
    assert freshness_problems(sent_at, NOW, IngestPolicy()) != []  # without the stamp: refused
    assert clock_skew(stamp, NOW) == timedelta(hours=1)
    assert clock_skew(NOW + SKEW_LIMIT, NOW) is None  # at the limit: in step
    assert held_at_edge(stamp, NOW) == timedelta(0)
    warning = clock_warning(timedelta(seconds=3599.9))
    assert warning.code == "edge.clock_ahead"
    assert "60 minutes ahead" in warning.message and "set the clinic's clock" in warning.message


@pytest.mark.parametrize(
    ("raw", "utc"),
    [
        ("2026-12-06T09:00:00.123456+08:00", datetime(2026, 12, 6, 1, 0, 0, 123456, UTC)),
        ("2026-12-06T01:00:00Z", datetime(2026, 12, 6, 1, tzinfo=UTC)),
        ("2026-12-06T01:00:00+00:00", datetime(2026, 12, 6, 1, tzinfo=UTC)),
        ("2026-12-05T17:00:00-08:00", datetime(2026, 12, 6, 1, tzinfo=UTC)),
    ],
)
def test_a_stamp_is_an_instant_with_its_offset(raw: str, utc: datetime) -> None:
    at = parse_stamp(raw)
    assert at == utc and at is not None
    assert at.isoformat() == datetime.fromisoformat(raw).isoformat()  # the clinic's offset kept


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "yesterday",
        "2026-12-06",  # a day, not an instant
        "2026-12-06T09:00:00",  # no offset: whose clock?
        "2026-12-06T09:00:00+25:00",
        "0001-01-01T00:00:00+08:00",  # before the first instant a datetime holds
        "٢٠٢٦-12-06T09:00:00+08:00",  # digits, but not ASCII ones
        "2026-12-06T09:00:00.123456+08:00" + " " * 20,
    ],
)
def test_anything_else_is_not_a_stamp(raw: str) -> None:
    assert parse_stamp(raw) is None


def test_an_unreadable_stamp_is_refused_naming_the_header_not_its_value() -> None:
    problem = stamp_problem("Hie-Edge-Received")
    assert problem.code == "envelope.edge_stamp" and problem.field == "Hie-Edge-Received"
    assert "offset" in problem.message and "new submission id" in problem.message
