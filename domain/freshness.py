"""When a submission may arrive: not from the future, not from too long ago; and what the time
a village clinic's edge node took it says of the clinic's clock.

An envelope says when it was signed (``sent_at``). One dated more than ``max_ahead`` after
the exchange received it comes from a clock that is wrong (or was set forward to outlive the
window); one older than ``max_age`` is stale, perhaps replayed from a copy. A village clinic
may be offline for days, so the age allowed is the consortium's to choose (policy file,
``[ingest] max_submission_age``, 30 days by default).

A submission sent through a clinic's edge node also carries the edge's stamp: when the edge
took it, on the clinic's clock. Both limits are then measured from the stamp, which is on the
same clock as ``sent_at``: a week in the edge's store while the link was down is not age, and
a clinic whose clock runs an hour fast signs and stamps an hour ahead alike, so neither is
refused for the hub's clock disagreeing with the clinic's. The stamp is trusted as the
institution's own statement, as ``sent_at`` is: only the institution's NATS credentials, or
its edge node relaying under the hub's link, can publish on its submit subject. It is not
under the signature, so whoever holds those credentials could stamp a copy of an old envelope
to look fresh; the ledger still refuses any submission id it has accepted or refused before.

What one stamp says of the clinic's clock (``clock_skew``): the stamp cannot honestly be
later than the moment the exchange received the submission, and time queued at the edge only
makes it earlier, so a stamp more than ``SKEW_LIMIT`` ahead of the exchange's clock means the
clinic's clock is fast by at least that much: the stamp bounds the clinic's clock offset from
below. A slow clock cannot be told apart from time the submission waited at the edge by the
stamp alone (``held_at_edge`` is that wait, as far as the clocks agree). The other bound comes
the other way: the edge keeps the exchange's receipts, each saying when the exchange answered
(its clock), stored by the edge when it came down (the clinic's clock), and a receipt can only
come down after it was written, so the least difference over recent receipts bounds the offset
from above. The clinic's sender measures it and sends it with each submission
(``Hie-Edge-Clock-Offset``, seconds); one below ``-SKEW_LIMIT`` means the clinic's clock is slow
by at least that much. A reported bound below the stamp's own (impossible for true clocks) is
not believed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.problems import Problem

# A clinic clock this far ahead of the exchange's is flagged (issue 16: "more than 5 minutes
# off its hub"); within it, the clocks are in step.
SKEW_LIMIT = timedelta(minutes=5)
# Longer than any ISO 8601 instant with an offset and microseconds (32 characters).
_STAMP_CHARS = 40


@dataclass(frozen=True)
class IngestPolicy:
    max_age: timedelta = timedelta(days=30)
    max_ahead: timedelta = timedelta(minutes=5)


def freshness_problems(
    sent_at: datetime,
    received_at: datetime,
    policy: IngestPolicy,
    stamp: datetime | None = None,
) -> list[Problem]:
    """Why an envelope signed at ``sent_at`` may not be taken at ``received_at`` (none: it
    may). With the edge's ``stamp`` (when the clinic's edge took it, on the clinic's clock),
    both limits count from the stamp instead of from ``received_at``."""
    taken, by = (received_at, "the exchange") if stamp is None else (stamp, "the clinic's edge")
    if sent_at - taken > policy.max_ahead:
        clock = "the exchange's clock" if stamp is None else "the time the clinic's edge took it"
        return [
            Problem(
                "envelope.sent_at_future",
                f"sent_at is more than {_span(policy.max_ahead)} ahead of {clock}: "
                "check the sending system's clock, then sign the records again under a new "
                "submission id",
                "sent_at",
            )
        ]
    if taken - sent_at > policy.max_age:
        return [
            Problem(
                "envelope.sent_at_stale",
                f"sent_at is more than {_span(policy.max_age)} before {by} received it, "
                "longer than this consortium accepts: sign the records again under a new "
                "submission id",
                "sent_at",
            )
        ]
    return []


def parse_stamp(raw: str) -> datetime | None:
    """An edge's stamp as the instant it names; None unless it is an ISO 8601 date and time
    with its offset (``2026-12-06T09:00:00.123456+08:00``, or ``Z``)."""
    if len(raw) > _STAMP_CHARS or not raw.isascii():
        return None
    try:
        at = datetime.fromisoformat(raw)
        if at.utcoffset() is None:
            return None
        at.astimezone(UTC)  # an instant datetime can hold (not 0001-01-01T00:00+08:00)
    except (ValueError, OverflowError):
        return None
    return at


def stamp_problem(header: str) -> Problem:
    """The refusal of a submission whose edge stamp (in ``header``) cannot be read: when the
    edge took it is unknown, so neither limit can be measured."""
    return Problem(
        "envelope.edge_stamp",
        f"the {header} header is not an ISO 8601 date and time with its offset (such as "
        "2026-12-06T09:00:00+08:00): the clinic's edge node wrote it wrongly; update the edge, "
        "then sign the records again under a new submission id",
        header,
    )


# How far below the stamp's lower bound an edge's reported upper bound may fall and still be
# believed: the two are measured a little apart in time, by clocks that tick apart.
REPORT_TOLERANCE = timedelta(seconds=5)
MAX_REPORTED = timedelta(days=3650)  # beyond this an offset header is nonsense, not a clock


def clock_skew(
    stamp: datetime, received_at: datetime, reported: timedelta | None = None
) -> timedelta | None:
    """How far the clinic's clock is off the exchange's, when more than ``SKEW_LIMIT``:
    positive when ahead (at least this much, from the stamp), negative when behind (at least
    this much, from the edge's ``reported`` upper bound); None when in step as far as can be
    told (see the module docstring)."""
    ahead = stamp - received_at
    if ahead > SKEW_LIMIT:
        return ahead
    if reported is not None and ahead - REPORT_TOLERANCE <= reported < -SKEW_LIMIT:
        return reported
    return None


def parse_offset(raw: str) -> timedelta | None:
    """An edge's reported clock offset (seconds, a decimal number); None when unreadable.
    It only ever raises a flag, so an unreadable one is ignored rather than refused."""
    if len(raw) > 24 or not raw.isascii():
        return None
    try:
        offset = timedelta(seconds=float(raw))
    except (ValueError, OverflowError):
        return None
    return offset if abs(offset) <= MAX_REPORTED else None


def clock_warning(skew: timedelta) -> Problem:
    """What a receipt tells a clinic whose clock ``clock_skew`` flagged (the submission is
    taken all the same)."""
    minutes = round(abs(skew.total_seconds()) / 60)
    way = "ahead of" if skew > timedelta(0) else "behind"
    return Problem(
        "edge.clock_ahead" if skew > timedelta(0) else "edge.clock_behind",
        f"the clinic's clock was about {minutes} minutes {way} the exchange's when its edge "
        "node took this submission: it is accepted, but set the clinic's clock right (let it "
        "take the time from the network) so that the times its records carry are true",
    )


def held_at_edge(stamp: datetime, received_at: datetime) -> timedelta:
    """How long the submission waited at the edge before the exchange received it, as far as
    the two clocks agree (none when the stamp is later: a fast clock, or clocks a little
    apart)."""
    return max(timedelta(0), received_at - stamp)


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
