"""The referral state machine: every (state, action, party) against the specified table, and its
properties (any command by any party at any time, replayed from its events). Its deadlines are
in test_referral_deadlines.py; the expected table in referral_paths.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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

from domain.referral import OVERDUE, STATES, TRANSITIONS, Referral, TransitionRefused
from domain.referral_items import ACTIONS
from tests.factories import (
    REFERRAL_PARTIES,
    referral_command,
    referral_offsets,
    referral_urgencies,
)
from tests.unit.referral_paths import (
    CLOSED,
    EXPECTED,
    LATE,
    PATHS,
    POLICY,
    SOON,
    T0,
    act,
    new_referral,
    reach,
    refusal,
)

# The table --------------------------------------------------------------------------------------


def test_the_module_table_is_the_specified_lifecycle() -> None:
    assert TRANSITIONS == EXPECTED
    assert set(PATHS) == set(STATES)
    # Every action of the table is one an item may carry, or the exchange's expire.
    assert {action for _, action in TRANSITIONS} <= {*ACTIONS, "expire"}


CASES = [(s, a, role) for s in STATES for a in (*ACTIONS, "expire") for role in REFERRAL_PARTIES]


@pytest.mark.parametrize(
    ("state", "action", "role"), CASES, ids=[f"{s}-{a}-by-{role}" for s, a, role in CASES]
)
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
        if action in ("accept", "arrive") and self.deadline is not None and now >= self.deadline:
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
_LOOP = {
    "requested": ("accept", "receiver"),
    "accepted": ("arrive", "receiver"),
    "arrived": ("complete", "receiver"),
    "completed": ("back_refer", "receiver"),
}
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


ReferralLifecycle.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
TestReferralLifecycle = ReferralLifecycle.TestCase
