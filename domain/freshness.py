"""When a submission may arrive: not from the future, not from too long ago.

An envelope says when it was signed (``sent_at``). One dated more than ``max_ahead`` after
the exchange received it comes from a clock that is wrong (or was set forward to outlive the
window); one older than ``max_age`` is stale, perhaps replayed from a copy. A village clinic
may be offline for days, so the age allowed is the consortium's to choose (policy file,
``[ingest] max_submission_age``, 30 days by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.problems import Problem


@dataclass(frozen=True)
class IngestPolicy:
    max_age: timedelta = timedelta(days=30)
    max_ahead: timedelta = timedelta(minutes=5)


def freshness_problems(
    sent_at: datetime, received_at: datetime, policy: IngestPolicy
) -> list[Problem]:
    """Why an envelope signed at ``sent_at`` may not be taken at ``received_at`` (none: it
    may)."""
    if sent_at - received_at > policy.max_ahead:
        return [
            Problem(
                "envelope.sent_at_future",
                f"sent_at is more than {_span(policy.max_ahead)} ahead of the exchange's clock: "
                "check the sending system's clock, then sign the records again under a new "
                "submission id",
                "sent_at",
            )
        ]
    if received_at - sent_at > policy.max_age:
        return [
            Problem(
                "envelope.sent_at_stale",
                f"sent_at is more than {_span(policy.max_age)} before the exchange received it, "
                "longer than this consortium accepts: sign the records again under a new "
                "submission id",
                "sent_at",
            )
        ]
    return []


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
