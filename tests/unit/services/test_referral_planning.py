"""Referral planning (domain.services.referrals) against an in-memory ledger: a request
becomes a Referral going up or down a level; every refusal names its rule and field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.referral import reference_for, referral_id
from domain.services.refusal import SubmissionRefused
from domain.services.submissions import HeldFacts
from tests.factories import resident
from tests.unit.services.fakes import RECEIVED, FakeLedger, check_and_save, pending, services


def request(source_id: str, to: str, rid: str = resident(1), **extra: Any) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral",
        "payload": {
            "patient": {"resident_id": rid},
            "to_institution": to,
            "urgency": "urgent",
            "referring_doctor": "张医生",
            "reason": "血压控制不佳",
            "requested_at": datetime(2026, 11, 2, 7, 0, tzinfo=UTC).isoformat(),
            **extra,
        },
    }


def step(
    source_id: str, reference: str, action: str, rid: str = resident(1), **extra: Any
) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral_action",
        "payload": {
            "patient": {"resident_id": rid},
            "referral": reference,
            "action": action,
            "at": datetime(2026, 11, 2, 9, 0, tzinfo=UTC).isoformat(),
            **extra,
        },
    }


def refused(ledger: FakeLedger, institution: str, *items: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(SubmissionRefused) as exc:
        services(ledger).check([pending(institution, *items, submission_id="x")], HeldFacts())
    [problem] = exc.value.problems
    return problem.code, problem.field


def test_a_request_up_a_level_becomes_an_upward_referral_with_its_deadline() -> None:
    ledger = FakeLedger()
    # A township health centre refers its patient to the county hospital.
    plan = check_and_save(ledger, pending("thc-1", request("r1", "ch-1")))
    [referral] = plan.referrals.values()
    assert referral.id == referral_id(reference_for("thc-1", "r1"))
    assert (referral.direction, referral.from_institution, referral.to_institution) == (
        "upward",
        "thc-1",
        "ch-1",
    )
    assert referral.deadline == RECEIVED + services(ledger).referrals.policy.accept_within["urgent"]
    # Saved in ledger order after the identity and the submission that carried it.
    assert plan.aggregates[-1] is referral
    assert str(referral.patient_id) == plan.submissions[0].patient_ids[0]


def test_a_request_down_a_level_is_downward() -> None:
    ledger = FakeLedger()
    plan = check_and_save(ledger, pending("ch-1", request("r1", "vc-1")))
    assert [r.direction for r in plan.referrals.values()] == ["downward"]


@pytest.mark.parametrize(
    ("sender", "item", "expected"),
    [
        (
            "thc-1",
            request("r1", "nowhere"),
            ("referral.unknown_institution", "payload.to_institution"),
        ),
        ("thc-1", request("r1", "thc-1"), ("referral.to_self", "payload.to_institution")),
        ("thc-1", request("r1", "thc-2"), ("referral.same_level", "payload.to_institution")),
        (
            "thc-1",
            request("r1", "ch-1", direction="downward"),
            ("referral.direction", "payload.direction"),
        ),
    ],
)
def test_a_request_that_breaks_a_rule_is_refused(
    sender: str, item: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert refused(FakeLedger(), sender, item) == expected


def test_the_receiver_accepts_a_held_referral() -> None:
    ledger = FakeLedger()
    check_and_save(ledger, pending("thc-1", request("r1", "ch-1")))
    # The county hospital accepts it in a later batch: the referral is loaded and moved on.
    plan = check_and_save(
        ledger, pending("ch-1", step("a1", "thc-1/r1", "accept"), submission_id="s-2")
    )
    [referral] = plan.referrals.values()
    assert referral.state == "accepted"


def test_a_request_and_its_acceptance_in_one_batch() -> None:
    ledger = FakeLedger()
    plan = check_and_save(
        ledger,
        pending("thc-1", request("r1", "ch-1")),
        pending("ch-1", step("a1", "thc-1/r1", "accept"), submission_id="s-2"),
    )
    assert [r.state for r in plan.referrals.values()] == ["accepted"]


def test_a_step_on_a_referral_the_institution_takes_no_part_in_looks_like_no_referral() -> None:
    ledger = FakeLedger()
    check_and_save(ledger, pending("thc-1", request("r1", "ch-1")))
    # thc-2 is no party: the same answer as for a referral that does not exist.
    assert refused(ledger, "thc-2", step("a1", "thc-1/r1", "accept")) == (
        "referral.unknown",
        "payload.referral",
    )
    assert refused(ledger, "ch-1", step("a1", "thc-1/none", "accept")) == (
        "referral.unknown",
        "payload.referral",
    )


def test_a_step_naming_another_patient_is_refused() -> None:
    ledger = FakeLedger()
    check_and_save(ledger, pending("thc-1", request("r1", "ch-1")))
    assert refused(ledger, "ch-1", step("a1", "thc-1/r1", "accept", rid=resident(2))) == (
        "referral.patient_mismatch",
        "payload.patient",
    )


def test_a_step_the_transition_table_forbids_keeps_the_tables_code() -> None:
    ledger = FakeLedger()
    check_and_save(ledger, pending("thc-1", request("r1", "ch-1")))
    # The sender cannot accept its own referral: the table's code, on the action field.
    code, field = refused(ledger, "thc-1", step("a1", "thc-1/r1", "accept"))
    assert code.startswith("referral.") and code != "referral.unknown"
    assert field == "payload.action"
