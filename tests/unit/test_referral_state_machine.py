"""The referral state machine: every (state, action, party), its deadlines, and its properties.

The expected table is written out here, from the lifecycle the module's docstring draws, rather
than read from ``TRANSITIONS``: a wrong entry in the module then fails the table test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from domain.referral import (
    OVERDUE,
    STATES,
    TRANSITIONS,
    URGENCIES,
    Referral,
    ReferralPolicy,
    TransitionRefused,
    reference_for,
)
from domain.referral_items import ACTIONS
from tests.factories import (
    REFERRAL_PARTIES,
    REFERRAL_RECEIVER,
    REFERRAL_SENDER,
    referral_command,
    referral_offsets,
    referral_urgencies,
)

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
_TO_BACK_REFERRED = [("accept", "receiver"), ("arrive", "receiver"), ("complete", "receiver"),
                     ("back_refer", "receiver")]
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


def new_referral(urgency: str = "routine", at: datetime = T0,
                 policy: ReferralPolicy = POLICY) -> Referral:
    """A fresh synthetic referral from a township health centre to the county hospital."""
    reference = reference_for(REFERRAL_SENDER, "REF-0001")
    return Referral(reference=reference, patient_id=uuid5(NAMESPACE_URL, "synthetic-patient-1"),
                    from_institution=REFERRAL_SENDER, to_institution=REFERRAL_RECEIVER,
                    direction="upward", urgency=urgency,
                    content={"reason": "血压控制不佳，需上级医院调整用药"},
                    received_at=at, accept_by=at + policy.accept_within[urgency],
                    source="REF-0001")


def act(referral: Referral, action: str, role: str, at: datetime,
        policy: ReferralPolicy = POLICY) -> None:
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


# The table --------------------------------------------------------------------------------------

def test_the_module_table_is_the_specified_lifecycle() -> None:
    assert TRANSITIONS == EXPECTED
    assert set(PATHS) == set(STATES)
    # Every action of the table is one an item may carry, or the exchange's expire.
    assert {action for _, action in TRANSITIONS} <= {*ACTIONS, "expire"}


CASES = [(s, a, role) for s in STATES for a in (*ACTIONS, "expire") for role in REFERRAL_PARTIES]


@pytest.mark.parametrize(("state", "action", "role"), CASES,
                         ids=[f"{s}-{a}-by-{role}" for s, a, role in CASES])
def test_every_action_in_every_state_by_every_party(state: str, action: str, role: str) -> None:
    # Bring a fresh referral to the state by a legal path.
    referral = reach(state)
    version = referral.version
    step = EXPECTED.get((state, action))
    # Expire once the deadline has passed; any other action well within its deadline.
    at = LATE if action == "expire" else SOON
    if step is not None and step[1] == role:
        # The party the table names takes the action.
        act(referral, action, role, at)
        assert (referral.state, referral.version) == (step[0], version + 1)
        return
    # Anyone else, or any action the state does not allow, is refused and changes nothing.
    exc = refusal(lambda: act(referral, action, role, at))
    assert (referral.state, referral.version) == (state, version)
    if role == "third":
        # An institution outside the referral learns nothing of it, not even its state.
        assert exc.code == "referral.not_party" and "takes no part" in exc.message
        assert state not in exc.message
        return
    assert f"the referral is {state};" in exc.message
    if step is None:
        assert exc.code == "referral.transition"
        assert f"{action} is not allowed there" in exc.message
        can = [f"{a} (by the {p})" for (s, a), (_, p) in EXPECTED.items() if s == state]
        assert all(c in exc.message for c in can)
        assert ("it is closed" in exc.message) == (state in CLOSED) == (not can)
    else:
        assert exc.code == "referral.not_party"
        assert f"only the {step[1]} may {action} it" in exc.message


@pytest.mark.parametrize("state", STATES)
def test_only_a_back_referral_can_be_marked_overdue(state: str) -> None:
    # Long after every deadline, the exchange flags an overdue follow-up: only one is pending.
    referral = reach(state)
    if state == "back_referred":
        referral.mark_overdue(LATE)
        assert referral.overdue and referral.state == "back_referred"
        return
    exc = refusal(lambda: referral.mark_overdue(LATE))
    assert exc.code == "referral.transition" and f"the referral is {state}" in exc.message
    assert not referral.overdue


# Deadlines ----------------------------------------------------------------------------------------

def test_the_policy_defaults() -> None:
    policy = ReferralPolicy()
    assert policy.accept_within == {"emergency": timedelta(hours=2),
                                    "urgent": timedelta(hours=24),
                                    "routine": timedelta(hours=72)}
    assert policy.arrive_within == timedelta(days=7)
    assert policy.follow_up_within == timedelta(days=14)
    assert policy.care_after_completion == timedelta(days=30)


@pytest.mark.parametrize(("urgency", "hours"), [("emergency", 2), ("urgent", 24), ("routine", 72)])
def test_the_acceptance_deadline_follows_the_urgency(urgency: str, hours: int) -> None:
    referral = new_referral(urgency)
    assert referral.deadline == T0 + timedelta(hours=hours)
    assert referral.requested_at == T0 and referral.state == "requested"


def test_the_aggregate_takes_accept_by_as_given() -> None:
    policy = ReferralPolicy(accept_within={"emergency": timedelta(minutes=30),
                                           "urgent": timedelta(hours=6),
                                           "routine": timedelta(days=5)})
    assert new_referral("urgent", policy=policy).deadline == T0 + timedelta(hours=6)


@pytest.mark.parametrize("urgency", URGENCIES)
def test_an_unaccepted_referral_expires_at_its_deadline_not_before(urgency: str) -> None:
    referral = new_referral(urgency)
    due = T0 + POLICY.accept_within[urgency]
    # A second before the deadline the exchange may not expire it.
    exc = refusal(lambda: act(referral, "expire", "exchange", due - timedelta(seconds=1)))
    assert exc.code == "referral.not_due"
    assert (referral.state, referral.version) == ("requested", 1)
    # At the deadline it may.
    act(referral, "expire", "exchange", due)
    assert referral.state == "expired" and referral.deadline is None
    # Nobody had accepted: no care relationship was opened or closed.
    assert care(referral) == (None, None)


def test_after_acceptance_the_deadline_is_arrival_and_care_begins() -> None:
    policy = ReferralPolicy(arrive_within=timedelta(days=3))
    referral = new_referral("urgent")
    # The county hospital accepts five hours in.
    accepted_at = T0 + timedelta(hours=5)
    act(referral, "accept", "receiver", accepted_at, policy)
    assert referral.deadline == accepted_at + timedelta(days=3)
    assert care(referral) == (accepted_at, None)
    # The acceptance deadline no longer counts: expiring at the arrival deadline's eve is early.
    early = accepted_at + timedelta(days=3) - timedelta(microseconds=1)
    assert refusal(lambda: act(referral, "expire", "exchange", early)).code == "referral.not_due"
    # At the arrival deadline it expires, and the care relationship ends then.
    act(referral, "expire", "exchange", accepted_at + timedelta(days=3))
    assert referral.state == "expired"
    assert care(referral) == (accepted_at, accepted_at + timedelta(days=3))


def test_the_default_arrival_deadline_is_seven_days() -> None:
    referral = new_referral()
    act(referral, "accept", "receiver", T0 + timedelta(hours=1))
    assert referral.deadline == T0 + timedelta(hours=1, days=7)


def test_a_cancellation_after_acceptance_ends_the_care_relationship_then() -> None:
    referral = new_referral()
    act(referral, "accept", "receiver", T0 + timedelta(hours=1))
    # The sender cancels the next day: the receiver's care relationship ends at that moment.
    cancelled_at = T0 + timedelta(days=1)
    act(referral, "cancel", "sender", cancelled_at)
    assert referral.state == "cancelled" and referral.deadline is None
    assert care(referral) == (T0 + timedelta(hours=1), cancelled_at)


@pytest.mark.parametrize(("action", "role"), [("cancel", "sender"), ("reject", "receiver")])
def test_a_referral_closed_before_acceptance_opens_no_care(action: str, role: str) -> None:
    referral = new_referral()
    act(referral, action, role, T0 + timedelta(hours=1))
    assert care(referral) == (None, None)


def test_the_closed_loop_with_its_follow_up_and_care_deadlines() -> None:
    policy = ReferralPolicy(care_after_completion=timedelta(days=10))
    referral = new_referral("emergency")
    # Accepted, the patient arrives: no deadline is open while the patient is in care.
    act(referral, "accept", "receiver", T0 + timedelta(hours=1), policy)
    act(referral, "arrive", "receiver", T0 + timedelta(hours=3), policy)
    assert referral.deadline is None and care(referral) == (T0 + timedelta(hours=1), None)
    # Completion fixes the end of the care relationship.
    completed_at = T0 + timedelta(days=6)
    act(referral, "complete", "receiver", completed_at, policy)
    assert care(referral) == (T0 + timedelta(hours=1), completed_at + timedelta(days=10))
    # The back-referral sets the follow-up due date (default 14 days) and no open deadline.
    back_at = T0 + timedelta(days=7)
    act(referral, "back_refer", "receiver", back_at)
    assert referral.follow_up_due == back_at + timedelta(days=14)
    assert referral.deadline is None and not referral.overdue
    # Neither the back-referral nor the follow-up moves the end of care.
    act(referral, "follow_up", "sender", back_at + timedelta(days=2))
    assert referral.state == "followed_up"
    assert care(referral) == (T0 + timedelta(hours=1), completed_at + timedelta(days=10))


def test_the_default_care_after_completion_is_thirty_days() -> None:
    referral = reach("completed")
    assert care(referral) == (T0 + timedelta(hours=1), T0 + timedelta(hours=3, days=30))


def test_an_overdue_follow_up_is_flagged_once_and_may_still_happen() -> None:
    referral = reach("back_referred")
    due = T0 + timedelta(hours=4, days=14)
    assert referral.follow_up_due == due
    # Before it is due the exchange may not flag it.
    exc = refusal(lambda: referral.mark_overdue(due - timedelta(seconds=1)))
    assert exc.code == "referral.not_due" and not referral.overdue
    version = referral.version
    # At the due time it is flagged, without a change of state.
    referral.mark_overdue(due)
    assert referral.overdue and referral.state == "back_referred"
    assert referral.version == version + 1
    # Flagged once: a second mark is refused.
    exc = refusal(lambda: referral.mark_overdue(due + timedelta(days=1)))
    assert exc.code == "referral.transition" and referral.version == version + 1
    # The sender still follows the patient up; the record keeps that it was late.
    act(referral, "follow_up", "sender", due + timedelta(days=2))
    assert referral.state == "followed_up" and referral.overdue


def test_deadlines_compare_across_time_zones() -> None:
    referral = new_referral("emergency")
    # T0 + 2h is 12:30 in UTC+8, which is 02:30 UTC: the same instant, so the deadline.
    due_in_utc = (T0 + timedelta(hours=2)).astimezone(UTC)
    act(referral, "expire", "exchange", due_in_utc)
    assert referral.state == "expired"


def test_the_policy_needs_every_urgency() -> None:
    with pytest.raises(ValueError, match="emergency"):
        ReferralPolicy(accept_within={"urgent": timedelta(hours=24),
                                      "routine": timedelta(hours=72)})


_SPANS = ["emergency", "urgent", "routine", "arrive_within", "follow_up_within",
          "care_after_completion"]


@pytest.mark.parametrize("span", _SPANS)
@pytest.mark.parametrize("length", [timedelta(0), timedelta(hours=-1)], ids=["zero", "negative"])
def test_the_policy_refuses_a_non_positive_duration(span: str, length: timedelta) -> None:
    kwargs: dict[str, Any] = {}
    if span in URGENCIES:
        kwargs["accept_within"] = {**ReferralPolicy().accept_within, span: length}
    else:
        kwargs[span] = length
    with pytest.raises(ValueError, match="positive"):
        ReferralPolicy(**kwargs)


# Properties ---------------------------------------------------------------------------------------

@dataclass
class Model:
    """What the specification says a referral holds, kept beside the aggregate."""

    deadline: datetime | None
    state: str = "requested"
    follow_up_due: datetime | None = None
    overdue: bool = False
    care_from: datetime | None = None
    care_until: datetime | None = None
    version: int = 1

    def refusal(self, action: str, role: str, now: datetime) -> str | None:
        """The code a command is refused with, or None if it is allowed."""
        if action == OVERDUE:
            if self.state != "back_referred" or self.overdue:
                return "referral.transition"
            assert self.follow_up_due is not None
            return "referral.not_due" if now < self.follow_up_due else None
        if role == "third":
            return "referral.not_party"
        step = EXPECTED.get((self.state, action))
        if step is None:
            return "referral.transition"
        if step[1] != role:
            return "referral.not_party"
        if action == "expire":
            assert self.deadline is not None  # requested and accepted always have one
            if now < self.deadline:
                return "referral.not_due"
        if action in ("accept", "arrive") and self.deadline is not None \
                and now >= self.deadline:
            return "referral.deadline_passed"
        return None

    def apply(self, action: str, now: datetime) -> None:
        self.version += 1
        if action == OVERDUE:
            self.overdue = True
            return
        self.state = EXPECTED[(self.state, action)][0]
        self.deadline = None
        if self.state == "accepted":
            self.deadline, self.care_from = now + POLICY.arrive_within, now
        elif self.state == "back_referred":
            self.follow_up_due = now + POLICY.follow_up_within
        elif self.state == "completed":
            self.care_until = now + POLICY.care_after_completion
        elif self.state in ("cancelled", "expired") and self.care_from is not None:
            self.care_until = now


# The closed loop up to the back-referral, and who takes each step (then: follow-up or overdue).
_LOOP = {"requested": ("accept", "receiver"), "accepted": ("arrive", "receiver"),
         "arrived": ("complete", "receiver"), "completed": ("back_refer", "receiver")}
FIELDS = ("state", "overdue", "deadline", "follow_up_due", "care_from", "care_until", "version")


def snapshot(referral: Referral) -> dict[str, Any]:
    return {name: getattr(referral, name) for name in FIELDS}


class ReferralLifecycle(RuleBasedStateMachine):
    """Commands by any party at any time; the model says which succeed, replay must agree."""

    referral: Referral
    model: Model

    @initialize(urgency=referral_urgencies)
    def request(self, urgency: str) -> None:
        self.now = T0
        self.referral = new_referral(urgency)
        self.model = Model(deadline=T0 + POLICY.accept_within[urgency])
        self.events = list(self.referral.collect_events())

    def command(self, action: str, role: str, offset: timedelta) -> None:
        self.now += offset  # the ledger's time only moves forward
        expected = self.model.refusal(action, role, self.now)
        state, version = self.referral.state, self.referral.version
        try:
            if action == OVERDUE:
                self.referral.mark_overdue(self.now)
            else:
                act(self.referral, action, role, self.now)
        except TransitionRefused as exc:
            # A refused command was due to be refused, for that reason, and changed nothing.
            assert exc.code == expected, (action, role, state, exc.code)
            assert (self.referral.state, self.referral.version) == (state, version)
            assert self.referral.collect_events() == []
            return
        assert expected is None, (action, role, state, expected)
        # Every step taken is an entry of the table, taken by the party it names.
        if action != OVERDUE:
            assert EXPECTED[(state, action)] == (self.referral.state, role)
        self.model.apply(action, self.now)
        self.events += self.referral.collect_events()

    @rule(command=referral_command)
    def any_command(self, command: tuple[str, str, timedelta]) -> None:
        self.command(*command)

    def _moves(self) -> list[tuple[str, str]]:
        moves = [(a, p) for (s, a), (_, p) in EXPECTED.items() if s == self.model.state]
        if self.model.state == "back_referred" and not self.model.overdue:
            moves.append((OVERDUE, "exchange"))
        return moves

    # Random commands rarely walk the whole loop; these rules take steps the table allows
    # (expire and mark_overdue may still come too early and be refused), and go on along it.
    @precondition(lambda self: bool(self._moves()))
    @rule(data=st.data())
    def a_move_the_table_allows(self, data: st.DataObject) -> None:
        action, role = data.draw(st.sampled_from(self._moves()))
        self.command(action, role, data.draw(referral_offsets))

    @precondition(lambda self: self.model.state in _LOOP)
    @rule(offset=referral_offsets)
    def the_next_step_of_the_loop(self, offset: timedelta) -> None:
        self.command(*_LOOP[self.model.state], offset)

    @invariant()
    def holds_what_the_specification_says(self) -> None:
        assert self.referral.state in STATES
        event(f"reached {self.referral.state}" + (" (overdue)" if self.referral.overdue else ""))
        model = self.model
        assert snapshot(self.referral) == {name: getattr(model, name) for name in FIELDS}

    @invariant()
    def replays_from_its_events(self) -> None:
        replayed: Referral | None = None
        for e in self.events:
            replayed = e.mutate(replayed)
        assert replayed is not None
        assert snapshot(replayed) == snapshot(self.referral)
        # Everything else too (parties, content, timestamps), and one event per version.
        assert vars(replayed) == vars(self.referral)
        assert len(self.events) == self.referral.version


ReferralLifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=30,
                                               deadline=None)
TestReferralLifecycle = ReferralLifecycle.TestCase


@pytest.mark.parametrize("state", ["requested", "accepted"])
def test_past_its_deadline_the_receiver_cannot_take_an_open_referral_on(state: str) -> None:
    referral = reach(state)
    assert referral.deadline is not None
    action = "accept" if state == "requested" else "arrive"
    # A moment before the deadline it could; at the deadline it is refused, naming why.
    exc = refusal(lambda: act(referral, action, "receiver", referral.deadline))
    assert exc.code == "referral.deadline_passed" and "deadline passed" in exc.message
    assert referral.state == state
    # The sender may still cancel it (and the exchange expire it).
    act(referral, "cancel", "sender", referral.deadline + timedelta(minutes=1))
    assert referral.state == "cancelled"


def test_a_second_overdue_flag_says_it_is_already_flagged() -> None:
    referral = reach("back_referred")
    referral.mark_overdue(LATE)
    exc = refusal(lambda: referral.mark_overdue(LATE))
    assert exc.code == "referral.transition" and "already flagged" in exc.message
