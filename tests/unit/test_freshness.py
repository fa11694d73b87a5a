"""When a submission may arrive: its sent_at against the exchange's clock and the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.freshness import IngestPolicy, freshness_problems
from exchange.errors import ConfigurationError
from exchange.policy_file import load_ingest_policy

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
