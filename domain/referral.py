"""Two-way referrals (双向转诊) as a closed loop: the aggregate, its transition table, its timers.

    requested ─accept→ accepted ─arrive→ arrived ─complete→ completed ─back_refer→ back_referred
        │ reject→ rejected     │                                              │ follow_up→ followed_up
        ├ cancel→ cancelled ←──┤ (the sender, while the referral is open)      └ (overdue: a flag)
        └ expire→ expired  ←───┘ (the exchange, when a deadline passes)

``TRANSITIONS`` is the whole table: from a state, an action leads to a state, and only one
party may take it — the *sender* (who referred the patient), the *receiver* (to whom) or the
*exchange* (its scheduler). Anything else is refused with a reason naming the state and what is
allowed there. Deadlines are computed when an event is recorded, from the consortium's policy
and the ledger's time, and stored in the event: a restarted scheduler finds every one again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError

_NS = uuid5(NAMESPACE_URL, "urn:county-hie:referral")

SENDER, RECEIVER, EXCHANGE = "sender", "receiver", "exchange"
OPEN_STATES = ("requested", "accepted")
STATES = (
    "requested",
    "accepted",
    "rejected",
    "arrived",
    "completed",
    "back_referred",
    "followed_up",
    "cancelled",
    "expired",
)
# (state, action) -> (next state, the party that may take the action)
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("requested", "accept"): ("accepted", RECEIVER),
    ("requested", "reject"): ("rejected", RECEIVER),
    ("requested", "cancel"): ("cancelled", SENDER),
    ("requested", "expire"): ("expired", EXCHANGE),
    ("accepted", "arrive"): ("arrived", RECEIVER),
    ("accepted", "cancel"): ("cancelled", SENDER),
    ("accepted", "expire"): ("expired", EXCHANGE),
    ("arrived", "complete"): ("completed", RECEIVER),
    ("completed", "back_refer"): ("back_referred", RECEIVER),
    ("back_referred", "follow_up"): ("followed_up", SENDER),
}
# Actions the receiver can no longer take once the open state's deadline has passed.
LATE_REFUSED = ("accept", "arrive")
# Not a change of state: the exchange flags a follow-up that is overdue, once.
OVERDUE = "mark_overdue"
URGENCIES = ("emergency", "urgent", "routine")


class TransitionRefused(DomainError):
    """An action the referral's state or the acting party does not allow (code says which)."""

    code = "referral.transition"


def allowed(state: str) -> list[str]:
    """The actions allowed in a state, each with the party that may take it."""
    return [
        f"{action} (by the {party})"
        for (s, action), (_, party) in TRANSITIONS.items()
        if s == state
    ]


@dataclass(frozen=True)
class ReferralPolicy:
    """The consortium's deadlines (configuration; the defaults follow common county practice
    and the basic public-health norm of a hypertension follow-up within two weeks)."""

    accept_within: dict[str, timedelta] = field(
        default_factory=lambda: {
            "emergency": timedelta(hours=2),
            "urgent": timedelta(hours=24),
            "routine": timedelta(hours=72),
        }
    )
    arrive_within: timedelta = timedelta(days=7)
    follow_up_within: timedelta = timedelta(days=14)
    # How long after completion the receiving institution may still read the record.
    care_after_completion: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        missing = [u for u in URGENCIES if u not in self.accept_within]
        if missing:
            raise ValueError(f"the referral policy needs an acceptance deadline for {missing}")
        spans = [
            *self.accept_within.values(),
            self.arrive_within,
            self.follow_up_within,
            self.care_after_completion,
        ]
        if any(span <= timedelta(0) for span in spans):
            raise ValueError("every referral deadline must be a positive duration")


def referral_id(reference: str) -> UUID:
    return uuid5(_NS, reference)


def reference_for(institution: str, source_id: str) -> str:
    """How actions name a referral: the sender's code and the request's source_id."""
    return f"{institution}/{source_id}"


class Referral(Aggregate):
    """One referral from request to follow-up. Commands check the table, then record."""

    @staticmethod
    def create_id(reference: str) -> UUID:
        return referral_id(reference)

    @event("Requested")
    def __init__(
        self,
        reference: str,
        patient_id: UUID,
        from_institution: str,
        to_institution: str,
        direction: str,
        urgency: str,
        content: dict[str, Any],
        received_at: datetime,
        accept_by: datetime,
        source: str,
    ) -> None:
        self.reference = reference
        self.patient_id = patient_id
        self.from_institution = from_institution
        self.to_institution = to_institution
        self.direction = direction
        self.urgency = urgency
        self.content = content
        self.state = "requested"
        self.requested_at = received_at
        self.deadline: datetime | None = accept_by  # the open state's deadline, if any
        self.follow_up_due: datetime | None = None
        self.overdue = False
        self.care_from: datetime | None = None
        self.care_until: datetime | None = None  # None while the relationship is open-ended

    # Rules --------------------------------------------------------------------------------

    def party(self, institution: str | None) -> str | None:
        if institution is None:
            return EXCHANGE
        if institution == self.from_institution:
            return SENDER
        if institution == self.to_institution:
            return RECEIVER
        return None

    def check(self, action: str, institution: str | None) -> str:
        """The state an action leads to, or TransitionRefused saying why not. An institution
        that takes no part learns nothing of the referral's state."""
        party = self.party(institution)
        if party is None:
            raise TransitionRefused(
                "this institution takes no part in the referral: only "
                "its sender and receiver act on it",
                code="referral.not_party",
            )
        step = TRANSITIONS.get((self.state, action))
        if step is None:
            can = allowed(self.state)
            raise TransitionRefused(
                f"the referral is {self.state}; {action} is not allowed there"
                + (f"; allowed: {', '.join(can)}" if can else "; it is closed"),
                code="referral.transition",
            )
        if party != step[1]:
            raise TransitionRefused(
                f"the referral is {self.state}; only the {step[1]} may {action} it",
                code="referral.not_party",
            )
        return step[0]

    def act(
        self,
        action: str,
        institution: str | None,
        details: dict[str, Any],
        received_at: datetime,
        policy: ReferralPolicy,
    ) -> None:
        """Take an action (institution None: the exchange), after the table allows it."""
        state = self.check(action, institution)
        if action == "expire" and (self.deadline is None or received_at < self.deadline):
            raise TransitionRefused(
                "the referral's deadline has not passed", code="referral.not_due"
            )
        if action in LATE_REFUSED and self.deadline is not None and received_at >= self.deadline:
            # Past the deadline the referral is expiring (the scheduler records it at once):
            # the receiver cannot take it on any more; the sender may still cancel.
            raise TransitionRefused(
                f"the referral is {self.state} but its deadline passed at "
                f"{self.deadline.isoformat()}; it expires; the sender may refer again",
                code="referral.deadline_passed",
            )
        deadline: datetime | None = None
        if state == "accepted":
            deadline = received_at + policy.arrive_within
        elif state == "back_referred":
            deadline = received_at + policy.follow_up_within
        care_until: datetime | None = None
        if state == "completed":
            care_until = received_at + policy.care_after_completion
        self.transition(
            action=action,
            state=state,
            institution=institution,
            details=details,
            received_at=received_at,
            deadline=deadline,
            care_until=care_until,
        )

    def mark_overdue(self, now: datetime) -> None:
        if self.state != "back_referred":
            raise TransitionRefused(
                f"the referral is {self.state}; no follow-up is pending", code="referral.transition"
            )
        if self.overdue:
            raise TransitionRefused(
                "the follow-up is already flagged overdue", code="referral.transition"
            )
        if self.follow_up_due is None or now < self.follow_up_due:
            raise TransitionRefused("the follow-up is not due yet", code="referral.not_due")
        self.follow_up_overdue(due=self.follow_up_due, received_at=now)

    # Events (they replay: no checks, no clock) -------------------------------------------

    @event("Transitioned")
    def transition(
        self,
        action: str,
        state: str,
        institution: str | None,
        details: dict[str, Any],
        received_at: datetime,
        deadline: datetime | None,
        care_until: datetime | None,
    ) -> None:
        self.state = state
        if state == "back_referred":
            self.follow_up_due, self.deadline = deadline, None
        else:
            self.deadline = deadline
        if state == "accepted":
            self.care_from = received_at
        elif state == "completed":
            self.care_until = care_until
        elif state in ("cancelled", "expired") and self.care_from is not None:
            self.care_until = received_at

    @event("FollowUpOverdue")
    def follow_up_overdue(self, due: datetime, received_at: datetime) -> None:
        self.overdue = True
