"""The referral routes' rule, beside ``decide()``: what a party to a referral sees of its
clinical content (the sender's request: reason, impression, history, treatment so far; the
receiver's steps: the back-referral's diagnosis, results, treatment and follow-up plan, its
notes and reasons). Pure, like ``decide()``, which it calls.

Where the referral stands and where it goes (parties, urgency, state, deadlines) is always the
parties' own: the closed loop runs on it. Of the content, in this order:

1. A seal that does not name the reader (病历封存) hides all of it, the reader's own writing
   included, and raises ``decide()``'s alert; break-glass opens it as it opens the record.
2. A party sees what it wrote itself: the exchange returning an institution's own writing to
   it discloses nothing to another processor (PIPL Art. 23), so no consent is asked for it.
3. The other party's writing is a read of the patient's record by the reader's institution,
   decided by ``decide()`` like every other read: a separate consent covering that
   institution for the purpose, not withdrawn (PIPL Art. 15, 23, 29), and a care relationship.
   Besides the institution's own (a visit, a contract, a referral it accepted), the referral
   gives one for its own content: to the receiver while it decides and from acceptance until
   its care ends (``care_after_completion`` after completion, or when the referral is called
   off); to the sender from the request until ``after_close`` after the loop closed for it
   (followed up, rejected, cancelled or expired). The decision must let diagnoses through:
   every referral's content is one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from consent.decision import (
    DEFAULT_POLICY,
    AccessPolicy,
    AccessRequest,
    CareRelationship,
    Decision,
    Facts,
    Reason,
    decide,
    sealed_to,
)
from consent.facts import ReferralRecord
from domain.referral import RECEIVER, SENDER

__all__ = ["ReferralRecord", "ReferralView", "referral_care", "referral_content"]


@dataclass(frozen=True)
class ReferralView:
    """What one party sees of one referral's content. ``shown``: whose writing ("sender",
    "receiver"); ``decision``: the decision on the other party's writing (under a seal, on
    all of it), with its reasons, legal basis and care relationship, for the audit."""

    party: str | None
    shown: frozenset[str]
    decision: Decision


def referral_care(
    party: str, referral: ReferralRecord, institution: str, after_close: timedelta
) -> CareRelationship | None:
    """The care relationship the referral itself gives a party, for its own content only."""
    basis = f"referral:{referral.referral_id}"
    if party == SENDER:
        until = referral.closed_at + after_close if referral.closed_at is not None else None
        return CareRelationship(basis, institution, referral.requested_at, until)
    if referral.status == "requested":  # deciding whether to take the patient on
        return CareRelationship(basis, institution, referral.requested_at, None)
    if referral.care_from is not None:
        return CareRelationship(basis, institution, referral.care_from, referral.care_until)
    return None  # rejected, or called off before acceptance


def referral_content(
    request: AccessRequest,
    referral: ReferralRecord,
    facts: Facts,
    policy: AccessPolicy = DEFAULT_POLICY,
    *,
    after_close: timedelta,
) -> ReferralView:
    """What the requesting institution's reader sees of ``referral``'s content, given the
    patient's facts as of the request's position (the rules in this module's docstring)."""
    if request.institution == referral.from_institution:
        party = SENDER
    elif request.institution == referral.to_institution:
        party = RECEIVER
    else:
        return ReferralView(
            None,
            frozenset(),
            Decision(
                False,
                [Reason("referral.not_party", "the institution takes no part in the referral")],
            ),
        )
    care = referral_care(party, referral, request.institution, after_close)
    decision = decide(
        request, replace(facts, care=[*facts.care, *([care] if care else [])]), policy
    )
    if decision.permit and "diagnosis" not in decision.categories:
        decision = Decision(
            False,
            [
                Reason(
                    "referral.categories",
                    "the consents do not let diagnoses through, and a referral's content is one",
                )
            ],
        )
    if decision.permit:
        shown = frozenset({SENDER, RECEIVER})
    elif request.role not in policy.clinical_roles or sealed_to(request, facts):
        shown = frozenset()
    else:
        shown = frozenset({party})
    return ReferralView(party, shown, decision)
