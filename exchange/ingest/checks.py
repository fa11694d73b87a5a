"""The gateway's checks of one message, before anything of it reaches the ledger: sender,
signature (with the institution's key as the ledger holds it), the stamp of the clinic's edge
node when it came through one, envelope, items, and when it was sent. What an authenticated
submission is refused for is final (``rejection_rows``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from nats.aio.msg import Msg

from adapters.envelope import loads
from adapters.nats import EDGE_CLOCK_OFFSET, EDGE_RECEIVED
from domain.freshness import (
    IngestPolicy,
    clock_skew,
    freshness_problems,
    held_at_edge,
    parse_offset,
    parse_stamp,
    stamp_problem,
)
from domain.intake import intake_problems
from domain.problems import Problem
from domain.submission import submission_key, validate_envelope
from exchange.ingest.keys import InstitutionKeys, Key
from exchange.ingest.ledger import Pending
from exchange.ingest.signatures import signature_problem

UNKNOWN_INSTITUTION = Problem(
    "institution.unknown", "no institution is registered with the subject's code", "institution"
)
DEFAULT_INGEST = IngestPolicy()
_SUBMISSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Refusals that need not be final: a replay of the same bytes is refused again whatever the
# ledger holds by then (an envelope signed with a key since replaced never verifies again),
# and the sender must be able to sign the same records again (content-derived ids).
NOT_FINAL = frozenset({"signature.key_rotated"})


def rejection_rows(
    items: Sequence[Checked], at: datetime
) -> list[tuple[UUID, str, str, str, list[str]]]:
    """The refusals to keep for good: authenticated submissions' (a forgery must not spend a
    genuine id), with their problem codes only."""
    return [
        (
            submission_key(c.institution, c.submission_id),
            c.institution,
            c.submission_id,
            at.isoformat(),
            sorted({p.code for p in c.problems}),
        )
        for c in items
        if c.submission_id is not None
        and _SUBMISSION_ID.match(c.submission_id)
        and not {p.code for p in c.problems} <= NOT_FINAL
    ]


def edge_clock_rows(
    items: Sequence[Checked], at: datetime
) -> list[tuple[str, str, str, float, bool]]:
    """Each institution's edge clock as the batch (received ``at``) last measured it: its last
    stamped submission's stamp, the time received, how far the clinic's clock was off in
    seconds (when flagged: ahead or, negative, behind; else how far the stamp was ahead), and
    whether that is flagged (``Ledger.record_edge_clocks``)."""
    latest = {c.institution: c for c in items if c.stamp is not None}
    return [
        (
            code,
            c.stamp.isoformat(),
            at.isoformat(),
            (c.skew if c.skew is not None else c.stamp - at).total_seconds(),
            c.skew is not None,
        )
        for code, c in latest.items()
        if c.stamp is not None
    ]


@dataclass
class Checked:
    msg: Msg
    institution: str
    submission_id: str | None
    pending: Pending | None = None
    problems: list[Problem] = field(default_factory=list)
    position: int | None = None
    repeat: bool = False
    authenticated: bool = False  # signed by the subject's institution with its key
    # Sent through a clinic's edge node (read once its sender is authenticated: the stamp is
    # the institution's statement): when the edge took it, on the clinic's clock; how far
    # that clock is off the exchange's when flagged (domain.freshness.clock_skew: positive
    # ahead, negative behind); how long it waited at the edge, as far as the clocks agree.
    stamp: datetime | None = None
    skew: timedelta | None = None
    held: timedelta | None = None


class EnvelopeChecks:
    def __init__(
        self,
        load_key: Callable[[str], Awaitable[Key | None]],
        keys_pool: asyncpg.Pool | None,
        ingest_policy: IngestPolicy,
    ) -> None:
        # Cached while it LISTENs on keys_pool for rotations; without one, read every time.
        self.keys = InstitutionKeys(load_key, keys_pool)
        self.ingest_policy = ingest_policy

    async def check(self, msg: Msg, received_at: datetime) -> Checked:
        institution = msg.subject.rsplit(".", 1)[-1]
        header_id = (msg.headers or {}).get("Nats-Msg-Id")
        result = Checked(msg, institution, header_id)
        try:
            text = msg.data.decode("utf-8")
            doc = loads(text)
        except (UnicodeDecodeError, ValueError):
            result.problems = [Problem("envelope.not_json", "the submission is not UTF-8 JSON")]
            return result
        except RecursionError:
            result.problems = [
                Problem(
                    "envelope.too_deep",
                    "the submission nests JSON arrays or objects deeper than any envelope does",
                )
            ]
            return result
        if not isinstance(doc, dict):
            result.problems = [Problem("envelope.not_object", "the envelope must be a JSON object")]
            return result
        if isinstance(doc.get("submission_id"), str):
            result.submission_id = doc["submission_id"]
        if doc.get("institution") != institution:
            result.problems.append(
                Problem(
                    "sender.mismatch",
                    "the envelope's institution is not the one in the subject",
                    "institution",
                )
            )
        key = await self.keys.get(institution)
        if key is not None and signature_problem(doc, key.public) is not None:
            # Perhaps signed with a key registered a moment ago, which this gateway has not
            # heard of yet: the ledger's own answer decides. What is wrong is said by the
            # profile's form (exchange.ingest.signatures): the other profile's algorithm,
            # a malformed signature, or one that does not verify.
            key = await self.keys.get(institution, fresh=True)
            if key is not None and (problem := signature_problem(doc, key.public)):
                result.problems.append(problem)
        if key is None:
            result.problems.append(UNKNOWN_INSTITUTION)
        if result.problems:
            return result  # an unauthenticated envelope gets no further reading
        result.authenticated = True
        headers = msg.headers or {}
        if (raw := headers.get(EDGE_RECEIVED)) is not None:
            if (stamp := parse_stamp(raw)) is None:
                result.problems = [stamp_problem(EDGE_RECEIVED)]
                return result
            result.stamp = stamp
            reported = parse_offset(headers.get(EDGE_CLOCK_OFFSET) or "")
            result.skew = clock_skew(stamp, received_at, reported)
            result.held = held_at_edge(stamp, received_at)
        valid, problems = validate_envelope(doc)
        if valid is None:
            result.problems = problems
            return result
        if problems := intake_problems(valid):  # rules the ledger's stored items predate
            result.problems = problems
            return result
        if problems := freshness_problems(
            valid.sent_at, received_at, self.ingest_policy, result.stamp
        ):
            result.problems = problems
            return result
        assert key is not None
        result.pending = Pending(valid, text, received_at, key.version)
        return result
