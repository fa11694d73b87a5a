"""The checks a batch passes before it is saved (domain.services.submissions): corrections
name a held record, withdrawals name this patient's consent, a consent's scope names known
institutions; the first refused submission is named; the plan keeps ledger order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domain.services.refusal import SubmissionRefused
from domain.services.submissions import (
    HeldFacts,
    consent_owner,
    consents_wanted,
    correction_target,
    follows_earlier,
    records_wanted,
)
from domain.submission import Submission
from tests.factories import consent_item, observation_item, resident
from tests.unit.services.fakes import RECEIVED, FakeLedger, check_and_save, pending, services


def amend(rid: str, source_id: str, record: str) -> dict[str, Any]:
    return observation_item(rid, source_id, value="150") | {"amends": record}


def retract(rid: str, source_id: str, record: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "retract",
        "payload": {"patient": {"resident_id": rid}, "record": record, "reason": "录入错误"},
    }


def withdrawal(rid: str, source_id: str, consent: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "consent_withdrawal",
        "payload": {
            "patient": {"resident_id": rid},
            "consent": consent,
            "at": RECEIVED.isoformat(),
        },
    }


def refusal_of(ledger: FakeLedger, *batch: Any, held: HeldFacts | None = None) -> SubmissionRefused:
    with pytest.raises(SubmissionRefused) as exc:
        services(ledger).check(batch, held or HeldFacts())
    return exc.value


# Corrections -------------------------------------------------------------------------------


def test_a_correction_of_a_record_never_sent_is_refused_and_names_its_submission() -> None:
    ledger, rid = FakeLedger(), resident(1)
    good = pending("thc-1", observation_item(rid, "o1"), submission_id="s-1")
    bad = pending("thc-1", retract(rid, "x1", "never-sent"), submission_id="s-2")
    # The first submission passes; the second is the one named.
    refused = refusal_of(ledger, good, bad)
    assert refused.submission == bad.key
    [problem] = refused.problems
    assert (problem.code, problem.field, problem.item, problem.source_id) == (
        "correction.unknown_record",
        "payload.record",
        0,
        "x1",
    )
    # An amend of an unknown record points at its ``amends`` field.
    [problem] = refusal_of(ledger, pending("thc-1", amend(rid, "o2", "never-sent"))).problems
    assert (problem.code, problem.field) == ("correction.unknown_record", "amends")


def test_a_correction_of_a_record_the_ledger_holds_passes() -> None:
    ledger, rid = FakeLedger(), resident(1)
    batch = [pending("thc-1", retract(rid, "x1", "o1"))]
    held = HeldFacts(records={"thc-1": {"o1"}})
    assert len(services(ledger).check(batch, held).submissions) == 1
    # Held by another institution is not enough: a correction is its sender's own.
    assert refusal_of(ledger, pending("thc-2", retract(rid, "x1", "o1")), held=held).problems


def test_a_correction_of_a_record_sent_earlier_in_the_same_batch_passes() -> None:
    ledger, rid = FakeLedger(), resident(1)
    plan = check_and_save(
        ledger,
        pending("thc-1", observation_item(rid, "o1")),
        pending("thc-1", amend(rid, "o1-v2", "o1"), submission_id="s-2"),
    )
    assert [s.submission_id for s in plan.submissions] == ["s-1", "s-2"]
    # The source rows name the record each item is a version of.
    assert [(row[1], row[3]) for row in plan.source_rows] == [("o1", "o1"), ("o1-v2", "o1")]


def test_what_acts_on_an_earlier_submission_keeps_its_place_in_the_senders_order() -> None:
    rid = resident(1)
    alone = [
        observation_item(rid, "o1"),
        consent_item(rid, "c1"),
    ]
    after = [
        amend(rid, "o1-v2", "o1"),
        retract(rid, "o1-x", "o1"),
        withdrawal(rid, "c1-w", "thc-1/c1"),
        seal(rid, "s1"),
        # A version of a record it names: an order's report sent again as results come.
        observation_item(rid, "A000019/OBR/1") | {"record": "ord:AP000012"},
    ]
    assert not follows_earlier(pending("thc-1", *alone).valid)
    # Naming its own source id as its record is no version of another.
    assert not follows_earlier(
        pending("thc-1", observation_item(rid, "o3") | {"record": "o3"}).valid
    )
    for item in after:
        assert follows_earlier(pending("thc-1", consent_item(rid, "c2"), item).valid), item["kind"]


def test_what_a_batch_needs_from_the_ledger_is_asked_per_institution() -> None:
    rid = resident(1)
    batch = [
        pending("thc-1", retract(rid, "x1", "o1"), amend(rid, "o2-v2", "o2")),
        pending("thc-2", withdrawal(rid, "w1", "thc-1/c1"), submission_id="s-2"),
    ]
    assert records_wanted(batch) == {"thc-1": {"o1", "o2"}}
    assert consents_wanted(batch) == {"thc-1": ["c1"]}
    assert correction_target(batch[1].valid.items[0]) is None


# Consent withdrawals and scope ----------------------------------------------------------------


def test_a_withdrawal_names_a_held_consent_of_this_same_patient() -> None:
    ledger = FakeLedger()
    owner = check_and_save(ledger, pending("thc-1", consent_item(resident(1), "c1")))
    pid = owner.submissions[0].patient_ids[0]
    held = HeldFacts(consents={("thc-1", "c1"): pid})
    # Any institution may record the patient's withdrawal.
    plan = services(ledger).check(
        [pending("ch-1", withdrawal(resident(1), "w1", "thc-1/c1"), submission_id="s-2")], held
    )
    assert len(plan.submissions) == 1
    # Another patient cannot withdraw it, and an unknown consent is refused the same way.
    for item in (
        withdrawal(resident(2), "w1", "thc-1/c1"),
        withdrawal(resident(1), "w1", "thc-1/none"),
    ):
        [problem] = refusal_of(
            ledger, pending("ch-1", item, submission_id="s-3"), held=held
        ).problems
        assert (problem.code, problem.field) == ("consent.unknown", "payload.consent")


def test_a_consent_given_earlier_in_the_batch_can_be_withdrawn_in_it() -> None:
    ledger = FakeLedger()
    plan = services(ledger).check(
        [
            pending("thc-1", consent_item(resident(1), "c1")),
            pending("thc-1", withdrawal(resident(1), "w1", "thc-1/c1"), submission_id="s-2"),
        ],
        HeldFacts(),
    )
    assert len(plan.submissions) == 2


def test_a_consent_whose_scope_names_an_unregistered_institution_is_refused() -> None:
    ledger = FakeLedger()
    [problem] = refusal_of(
        ledger, pending("thc-1", consent_item(resident(1), "c1", scope=["ch-1", "zz-9", "aa-0"]))
    ).problems
    assert (problem.code, problem.field) == ("consent.scope_unknown", "payload.scope")
    assert problem.message.endswith("aa-0, zz-9")
    # "*" and registered codes pass.
    assert (
        services(ledger)
        .check(
            [pending("thc-1", consent_item(resident(1), "c1", scope=["*", "ch-1"]))], HeldFacts()
        )
        .submissions
    )


def test_consent_owner_reads_the_identity_from_the_submission_that_carried_it() -> None:
    doc = {"events": [observation_item(resident(1), "o1"), consent_item(resident(1), "c1")]}
    carried = Submission(
        institution="thc-1",
        submission_id="s-1",
        envelope=json.dumps(doc),
        patient_ids=["p-obs", "p-consent"],
        received_at=RECEIVED,
    )
    assert consent_owner(carried, "c1") == "p-consent"
    assert consent_owner(carried, "o1") is None  # not a consent


# The plan -------------------------------------------------------------------------------------


def test_the_plan_saves_identities_first_then_submissions_and_index_rows() -> None:
    ledger = FakeLedger()
    rid = resident(1)
    item = observation_item(rid, "o1")
    item["payload"]["patient"]["mrn"] = "M-1"
    plan = services(ledger).check([pending("thc-1", item)], HeldFacts())
    kinds = [type(a).__name__ for a in plan.aggregates]
    assert kinds == ["PatientIdentity", "Submission"]
    assert [row[:2] for row in plan.identifier_rows] == [("urn:county-hie:mrn:thc-1", "M-1")]
    assert plan.submissions[0].patient_ids == [str(plan.aggregates[0].id)]


# Seals ---------------------------------------------------------------------------------------


def seal(rid: str, source_id: str, **ref: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "seal",
        "payload": {
            "patient": {"resident_id": rid, **ref},
            "readers": ["ch-1/officer-wu"],
            "reason": "医疗纠纷封存",
            "at": RECEIVED.isoformat(),
        },
    }


def test_only_an_institution_holding_the_patients_records_seals_them() -> None:
    ledger, rid = FakeLedger(), resident(5)
    visit = observation_item(rid, "o1")
    visit["payload"]["patient"]["mrn"] = "CH-0005"
    check_and_save(ledger, pending("ch-1", visit))
    # The township centre never registered the patient: its seal would lock the county out.
    refused = refusal_of(ledger, pending("thc-1", seal(rid, "s1"), submission_id="s-2"))
    assert [(p.code, p.field) for p in refused.problems] == [("seal.not_holder", "kind")]
    # The county holds the record (its MRN is linked): it seals.
    check_and_save(ledger, pending("ch-1", seal(rid, "s1"), submission_id="s-3"))
    # A seal that names its own new MRN for the patient does not make its sender a holder...
    other = resident(6)
    refused = refusal_of(
        ledger, pending("thc-1", seal(other, "s2", mrn="T-6"), submission_id="s-4")
    )
    assert [p.code for p in refused.problems] == ["seal.not_holder"]
    # ... but a record sent before it in the same submission does.
    record = observation_item(other, "o6")
    record["payload"]["patient"]["mrn"] = "T-6"
    check_and_save(ledger, pending("thc-1", record, seal(other, "s2"), submission_id="s-5"))
