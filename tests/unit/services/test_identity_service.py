"""The regional patient index's rules (domain.services.identity) against an in-memory ledger:
resolve, link, merge, unmerge, and the refusals that name the item and the field."""

from __future__ import annotations

from uuid import UUID

import pytest

from domain.identity import HEALTH_CARD_SYSTEM, mrn_system, patient_id_for
from domain.resident_id import ResidentId
from domain.services.identity import Changes, PatientIndex
from domain.services.refusal import SubmissionRefused
from domain.services.submissions import HeldFacts
from tests.factories import resident
from tests.unit.services.fakes import (
    KEY,
    FakeLedger,
    check_and_save,
    decision,
    merge,
    patient,
    pending,
    ref,
    root_of,
    services,
    unmerge,
)

STEWARD = "mpi-steward"  # the identity steward's desk


def who(
    ledger: FakeLedger, *items: dict[str, object], institution: str = "thc-1", sid: str = "s-1"
) -> list[str]:
    """Check and save one submission; the identity each of its items is about."""
    plan = check_and_save(ledger, pending(institution, *items, submission_id=sid))
    return plan.submissions[0].patient_ids


def refusal(ledger: FakeLedger, *items: dict[str, object]) -> SubmissionRefused:
    with pytest.raises(SubmissionRefused) as refused:
        services(ledger).check([pending("thc-1", *items)], HeldFacts())
    return refused.value


def test_a_resident_seen_first_is_registered_and_their_mrn_linked() -> None:
    ledger = FakeLedger()
    rid = resident(1)
    # A clinic sends the resident with its own MRN.
    plan = check_and_save(ledger, pending("thc-1", patient("p1", rid=rid, mrn="M-1")))
    pid = patient_id_for(ResidentId(rid), KEY)
    # The identity is the keyed pseudonym of the resident ID, and the MRN now names it.
    assert plan.submissions[0].patient_ids == [str(pid)]
    assert plan.identifier_rows == [(mrn_system("thc-1"), "M-1", pid)]
    assert ledger.identities[pid].identifiers == [(mrn_system("thc-1"), "M-1")]
    # The MRN alone now finds the same resident.
    assert who(ledger, patient("p2", mrn="M-1"), sid="s-2") == [str(pid)]


def test_the_same_mrn_of_another_institution_is_another_identifier() -> None:
    ledger = FakeLedger()
    first = who(ledger, patient("p1", rid=resident(1), mrn="M-1"))
    # thc-2's MRN "M-1" is its own number: a temporary identity of its own.
    other = who(ledger, patient("p1", mrn="M-1"), institution="thc-2")
    assert other != first
    assert ledger.identities[UUID(other[0])].temporary


def test_a_temporary_identity_joins_the_resident_once_the_resident_id_is_known() -> None:
    ledger = FakeLedger()
    # A newborn, first seen with a health card only: a temporary identity.
    [temp] = who(ledger, patient("p1", card="HC000009"))
    assert ledger.identities[UUID(temp)].temporary
    # Later the same card comes with a resident ID: the temporary identity is merged into it.
    [resident_pid] = who(ledger, patient("p2", rid=resident(2), card="HC000009"), sid="s-2")
    assert root_of(ledger, temp) == UUID(resident_pid)
    assert ledger.identities[UUID(resident_pid)].absorbed == [UUID(temp)]


def test_an_identifier_naming_another_resident_is_a_conflict() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1), mrn="M-1"))
    # The same MRN now arrives with a different resident's ID.
    refused = refusal(ledger, patient("p9", rid=resident(2), mrn="M-1"))
    [problem] = refused.problems
    assert (problem.code, problem.field, problem.item, problem.source_id) == (
        "identity.conflict",
        "payload.patient",
        0,
        "p9",
    )
    assert "merge" in problem.message
    # Nothing about the patient is in the error itself.
    assert resident(2) not in str(refused) and "M-1" not in str(problem)
    assert refused.code == "submission.refused"


def test_merge_joins_two_residents_and_unmerge_parts_them_again() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    # ADT^A40: resident 2 was the same person as resident 1, who survives.
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-3", institution=STEWARD)
    assert root_of(ledger, b) == UUID(a)
    # A merge of the same two again changes nothing.
    plan = check_and_save(
        ledger,
        pending(STEWARD, merge("m2", ref(resident(1)), ref(resident(2))), submission_id="s-4"),
    )
    assert all(not ident.pending_events for ident in plan.changes.touched.values())
    # Unmerge: resident 2 is a person of their own again.
    who(ledger, unmerge("u1", ref(resident(1)), ref(resident(2))), sid="s-5", institution=STEWARD)
    assert root_of(ledger, b) == UUID(b)
    assert ledger.identities[UUID(a)].absorbed == []


def test_unmerge_undoes_the_step_of_the_chain_that_reaches_the_survivor() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    [c] = who(ledger, patient("p3", rid=resident(3)), sid="s-3")
    # c into b, then b (with c) into a.
    who(ledger, merge("m1", ref(resident(2)), ref(resident(3))), sid="s-4", institution=STEWARD)
    who(ledger, merge("m2", ref(resident(1)), ref(resident(2))), sid="s-5", institution=STEWARD)
    assert root_of(ledger, c) == UUID(a)
    # Unmerging c from a undoes b's merge into a: c stays with b.
    who(ledger, unmerge("u1", ref(resident(1)), ref(resident(3))), sid="s-6", institution=STEWARD)
    assert root_of(ledger, c) == UUID(b) and root_of(ledger, b) == UUID(b)


def test_unmerge_of_patients_never_merged_is_refused() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1)))
    who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    [problem] = refusal(ledger, unmerge("u1", ref(resident(1)), ref(resident(2)))).problems
    assert (problem.code, problem.field) == ("unmerge.not_merged", "payload.unmerged")


def test_merge_of_a_patient_the_index_does_not_know_is_refused() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1)))
    [problem] = refusal(ledger, merge("m1", ref(resident(1)), ref(mrn="NEVER-SEEN"))).problems
    assert (problem.code, problem.field, problem.source_id) == (
        "patient.unknown",
        "payload.merged",
        "m1",
    )


def test_same_person_follows_merges_on_both_sides() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    [c] = who(ledger, patient("p3", mrn="M-3"), sid="s-3")
    index = PatientIndex(ledger, KEY)
    assert not index.same_person(UUID(a), UUID(b), Changes())
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-4", institution=STEWARD)
    who(ledger, merge("m2", ref(resident(1)), ref(mrn="M-3")), sid="s-5")
    assert index.same_person(UUID(b), UUID(c), Changes())
    assert not index.same_person(UUID(a), patient_id_for(ResidentId(resident(9)), KEY), Changes())


def test_a_health_card_naming_another_resident_says_health_card() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1), card="HC000001"))
    [problem] = refusal(ledger, patient("p2", rid=resident(2), card="HC000001")).problems
    assert problem.code == "identity.conflict" and "health card" in problem.message
    assert ledger.index[(HEALTH_CARD_SYSTEM, "HC000001")] == patient_id_for(
        ResidentId(resident(1)), KEY
    )


def test_a_member_merging_two_residents_only_asks_the_steward() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-3", institution="ch-1")
    assert root_of(ledger, b) == UUID(b)  # nothing moved
    [request] = ledger.requests.values()
    assert (request.survivor, request.merged, request.status) == (UUID(a), UUID(b), "pending")
    assert request.reference == "ch-1/m1"
    # The steward approves: the two are one person from this commit on.
    who(ledger, decision("d1", "ch-1/m1", ref(resident(1))), sid="s-4", institution=STEWARD)
    assert root_of(ledger, b) == UUID(a)
    assert ledger.requests[request.id].status == "approved"


def test_a_rejected_request_moves_nothing_and_is_decided_once() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-3", institution="vc-1")
    who(
        ledger,
        decision("d1", "vc-1/m1", ref(resident(1)), "reject"),
        sid="s-4",
        institution=STEWARD,
    )
    assert root_of(ledger, b) == UUID(b)
    [request] = ledger.requests.values()
    assert request.status == "rejected"
    with pytest.raises(SubmissionRefused) as again:
        services(ledger).check(
            [pending(STEWARD, decision("d2", "vc-1/m1", ref(resident(1))), submission_id="s-5")],
            HeldFacts(),
        )
    assert [p.code for p in again.value.problems] == ["merge.request_not_pending"]


def test_only_the_steward_decides_and_only_about_the_requests_survivor() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1)))
    who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    who(ledger, patient("p3", rid=resident(3)), sid="s-3")
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-4", institution="ch-1")
    # A member deciding its own request:
    [problem] = refusal(ledger, decision("d1", "ch-1/m1", ref(resident(1)))).problems
    assert (problem.code, problem.field) == ("merge.steward_only", "payload.request")
    # The steward naming someone else as the survivor:
    with pytest.raises(SubmissionRefused) as wrong:
        services(ledger).check(
            [pending(STEWARD, decision("d1", "ch-1/m1", ref(resident(3))), submission_id="s-5")],
            HeldFacts(),
        )
    assert [p.code for p in wrong.value.problems] == ["merge.request_mismatch"]


def test_a_temporary_identity_is_merged_at_once_only_by_the_institution_that_made_it() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [t] = who(ledger, patient("p2", mrn="NB-1"), sid="s-2", institution="ch-1")  # a newborn
    # A temporary patient thc-1 registered (by health card) cannot be folded into a
    # resident on ch-1's word: it waits for the steward.
    [other] = who(ledger, patient("p3", card="HC777777"), sid="s-3", institution="thc-1")
    plan = check_and_save(
        ledger,
        pending("ch-1", merge("m2", ref(resident(1)), ref(card="HC777777")), submission_id="s-4"),
    )
    assert root_of(ledger, other) == UUID(other)
    assert [r.merged for r in plan.changes.requests.values()] == [UUID(other)]
    # ch-1 merging its own newborn into the resident: applied at once.
    who(ledger, merge("m3", ref(resident(1)), ref(mrn="NB-1")), sid="s-5", institution="ch-1")
    assert root_of(ledger, t) == UUID(a)


def test_a_resident_is_never_merged_into_a_temporary_identity() -> None:
    ledger = FakeLedger()
    who(ledger, patient("p1", rid=resident(1)))
    who(ledger, patient("p2", mrn="T-9"), sid="s-2")
    [problem] = refusal(ledger, merge("m1", ref(mrn="T-9"), ref(resident(1)))).problems
    assert (problem.code, problem.field) == ("merge.into_temporary", "payload.patient")


def test_a_merge_is_undone_only_by_whoever_made_it_or_the_steward() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [b] = who(ledger, patient("p2", rid=resident(2)), sid="s-2")
    who(ledger, merge("m1", ref(resident(1)), ref(resident(2))), sid="s-3", institution="ch-1")
    who(ledger, decision("d1", "ch-1/m1", ref(resident(1))), sid="s-4", institution=STEWARD)
    # The requesting hospital (or any other member) cannot split what the steward joined.
    with pytest.raises(SubmissionRefused) as refused:
        services(ledger).check(
            [
                pending(
                    "ch-1", unmerge("u1", ref(resident(1)), ref(resident(2))), submission_id="s-5"
                )
            ],
            HeldFacts(),
        )
    assert [p.code for p in refused.value.problems] == ["unmerge.not_yours"]
    assert root_of(ledger, b) == UUID(a)
    # The steward undoes it by naming the request: two people again, the request undone.
    undo = {
        "source_id": "x1",
        "kind": "unmerge",
        "payload": {
            "patient": ref(resident(1)),
            "request": "ch-1/m1",
            "steward": "steward-zhao",
            "reason": "复核发现出生日期不一致，撤销合并",
        },
    }
    who(ledger, undo, sid="s-6", institution=STEWARD)
    assert root_of(ledger, b) == UUID(b)
    [request] = ledger.requests.values()
    assert request.status == "undone"
    # A member cannot name a request to undo.
    [problem] = refusal(ledger, {**undo, "source_id": "x2"}).problems
    assert problem.code == "unmerge.steward_only"


def test_an_institution_undoes_its_own_merge_of_its_own_temporary_patient() -> None:
    ledger = FakeLedger()
    [a] = who(ledger, patient("p1", rid=resident(1)))
    [t] = who(ledger, patient("p2", mrn="NB-7"), sid="s-2")
    who(ledger, merge("m1", ref(resident(1)), ref(mrn="NB-7")), sid="s-3")
    assert root_of(ledger, t) == UUID(a)
    who(ledger, unmerge("u1", ref(resident(1)), ref(mrn="NB-7")), sid="s-4")
    assert root_of(ledger, t) == UUID(t)
