"""The referral's deadlines: the policy and its defaults, acceptance, arrival, follow-up and care
deadlines, expiry and the overdue flag, across time zones."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest

from domain.referral import URGENCIES, ReferralPolicy
from tests.unit.referral_paths import (
    LATE,
    POLICY,
    T0,
    act,
    care,
    new_referral,
    reach,
    refusal,
)

# Deadlines ----------------------------------------------------------------------------------------


def test_the_policy_defaults() -> None:
    policy = ReferralPolicy()
    assert policy.accept_within == {
        "emergency": timedelta(hours=2),
        "urgent": timedelta(hours=24),
        "routine": timedelta(hours=72),
    }
    assert policy.arrive_within == timedelta(days=7)
    assert policy.follow_up_within == timedelta(days=14)
    assert policy.care_after_completion == timedelta(days=30)


@pytest.mark.parametrize(("urgency", "hours"), [("emergency", 2), ("urgent", 24), ("routine", 72)])
def test_the_acceptance_deadline_follows_the_urgency(urgency: str, hours: int) -> None:
    referral = new_referral(urgency)
    assert referral.deadline == T0 + timedelta(hours=hours)
    assert referral.requested_at == T0 and referral.state == "requested"


def test_the_aggregate_takes_accept_by_as_given() -> None:
    policy = ReferralPolicy(
        accept_within={
            "emergency": timedelta(minutes=30),
            "urgent": timedelta(hours=6),
            "routine": timedelta(days=5),
        }
    )
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
        ReferralPolicy(
            accept_within={"urgent": timedelta(hours=24), "routine": timedelta(hours=72)}
        )


_SPANS = [
    "emergency",
    "urgent",
    "routine",
    "arrive_within",
    "follow_up_within",
    "care_after_completion",
]


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
