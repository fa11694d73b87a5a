"""The referral lifecycle as specified, and the helpers the state-machine and deadline tests share:
a fresh synthetic referral, a step by a party, a legal path to each state. Not collected as tests.

The expected table is written out here, from the lifecycle the module's docstring draws, rather
than read from ``TRANSITIONS``: a wrong entry in the module then fails the table test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest

from domain.referral import Referral, ReferralPolicy, TransitionRefused, reference_for
from tests.factories import REFERRAL_PARTIES, REFERRAL_RECEIVER, REFERRAL_SENDER

CST = timezone(timedelta(hours=8), "CST")
T0 = datetime(2026, 11, 2, 8, 30, tzinfo=CST)
# After every path below and inside every deadline it sets; and past all of them.
SOON = T0 + timedelta(hours=10)
LATE = T0 + timedelta(days=400)
POLICY = ReferralPolicy()

# (state, action) -> (next state, the party that may take it): the lifecycle as specified.
EXPECTED: dict[tuple[str, str], tuple[str, str]] = {
    ("requested", "accept"): ("accepted", "receiver"),
    ("requested", "reject"): ("rejected", "receiver"),
    ("requested", "cancel"): ("cancelled", "sender"),
    ("requested", "expire"): ("expired", "exchange"),
    ("accepted", "arrive"): ("arrived", "receiver"),
    ("accepted", "cancel"): ("cancelled", "sender"),
    ("accepted", "expire"): ("expired", "exchange"),
    ("arrived", "complete"): ("completed", "receiver"),
    ("completed", "back_refer"): ("back_referred", "receiver"),
    ("back_referred", "follow_up"): ("followed_up", "sender"),
}
CLOSED = ("rejected", "followed_up", "cancelled", "expired")

# A legal path from a fresh referral to each state, as (action, role).
_TO_BACK_REFERRED = [
    ("accept", "receiver"),
    ("arrive", "receiver"),
    ("complete", "receiver"),
    ("back_refer", "receiver"),
]
PATHS: dict[str, list[tuple[str, str]]] = {
    "requested": [],
    "accepted": _TO_BACK_REFERRED[:1],
    "rejected": [("reject", "receiver")],
    "arrived": _TO_BACK_REFERRED[:2],
    "completed": _TO_BACK_REFERRED[:3],
    "back_referred": _TO_BACK_REFERRED,
    "followed_up": [*_TO_BACK_REFERRED, ("follow_up", "sender")],
    "cancelled": [("cancel", "sender")],
    "expired": [("expire", "exchange")],
}


def new_referral(
    urgency: str = "routine", at: datetime = T0, policy: ReferralPolicy = POLICY
) -> Referral:
    """A fresh synthetic referral from a township health centre to the county hospital."""
    reference = reference_for(REFERRAL_SENDER, "REF-0001")
    return Referral(
        reference=reference,
        patient_id=uuid5(NAMESPACE_URL, "synthetic-patient-1"),
        from_institution=REFERRAL_SENDER,
        to_institution=REFERRAL_RECEIVER,
        direction="upward",
        urgency=urgency,
        content={"reason": "血压控制不佳，需上级医院调整用药"},
        received_at=at,
        accept_by=at + policy.accept_within[urgency],
        source="REF-0001",
    )


def act(
    referral: Referral, action: str, role: str, at: datetime, policy: ReferralPolicy = POLICY
) -> None:
    referral.act(action, REFERRAL_PARTIES[role], {}, at, policy)


def reach(state: str) -> Referral:
    """A referral brought to ``state`` by its legal path, an hour per step (expire: when due)."""
    referral = new_referral()
    for hour, (action, role) in enumerate(PATHS[state], start=1):
        at = referral.deadline if action == "expire" else T0 + timedelta(hours=hour)
        assert at is not None
        act(referral, action, role, at)
    assert referral.state == state
    return referral


def care(referral: Referral) -> tuple[datetime | None, datetime | None]:
    """The care relationship the referral gives its receiver: (from, until)."""
    return referral.care_from, referral.care_until


def refusal(call: Any) -> TransitionRefused:
    with pytest.raises(TransitionRefused) as refused:
        call()
    return refused.value
