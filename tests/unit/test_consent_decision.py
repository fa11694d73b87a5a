"""The decision point: separate consent, scope, purpose, validity, break-glass, roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from consent.decision import (
    AccessRequest,
    BreakGlassGrant,
    CareRelationship,
    ConsentRecord,
    InvalidBreakGlass,
    check_break_glass,
)
from consent.decision import decide as _decide

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)
PATIENT = uuid4()


def request(purpose: str = "TREAT", role: str = "physician", institution: str = "county",
            person: str = "doctor-1", at: datetime = NOW) -> AccessRequest:
    return AccessRequest(person, role, institution, PATIENT, purpose, at)


def consent(kind: str = "separate", scope: tuple[str, ...] = ("*",),
            purposes: tuple[str, ...] = ("TREAT",), days: int = 365) -> ConsentRecord:
    return ConsentRecord(uuid4(), kind, scope, purposes, NOW - timedelta(days=1),
                         NOW + timedelta(days=days))


# The requesting institution treats the patient (an encounter it recorded).
CARE = [CareRelationship("encounter:e-1", "county")]


def decide(req: AccessRequest, consents: list[ConsentRecord],
           grants: list[BreakGlassGrant] | tuple[()] = (),
           care: list[CareRelationship] | None = None):  # type: ignore[no-untyped-def]
    return _decide(req, consents, grants, CARE if care is None else care)


def codes(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.code for r in decision.reasons]


def test_a_separate_consent_covering_the_institution_permits_and_is_the_legal_basis() -> None:
    c = consent(scope=("county", "thc-1"))
    decision = decide(request(), [c])
    assert decision.permit and decision.consent_id == c.consent_id
    assert decision.legal_basis == f"consent:{c.consent_id}"


def test_a_general_consent_never_stands_in_for_a_separate_one() -> None:
    decision = decide(request(), [consent(kind="general")])
    assert not decision.permit and codes(decision) == ["consent.general_only"]


def test_scope_purpose_and_validity() -> None:
    assert codes(decide(request(), [consent(scope=("thc-1",))])) == ["consent.scope"]
    assert codes(decide(request(), [consent(purposes=("HRESCH",))])) == ["consent.purpose"]
    expired = consent(days=-1)
    assert codes(decide(request(), [expired])) == ["consent.none"]
    assert codes(decide(request(purpose="HRESCH"), [consent()])) == ["purpose.not_supported"]


def test_only_physicians_read_clinical_records() -> None:
    for role in ("regulator", "admin", "nurse"):
        assert codes(decide(request(role=role), [consent()])) == ["role.not_permitted"]


def test_break_glass_needs_a_live_grant_of_this_physician_for_this_patient() -> None:
    grant = BreakGlassGrant(uuid4(), "doctor-1", PATIENT, "unconscious", NOW + timedelta(hours=4))
    assert decide(request("ETREAT"), [], [grant]).break_glass
    assert decide(request("ETREAT"), [], [grant]).obligations == [
        "flag-break-glass", "regulator-review", "notify-patient"]
    assert codes(decide(request("ETREAT"), [], [])) == ["break_glass.no_grant"]
    assert not decide(request("ETREAT", person="doctor-2"), [], [grant]).permit
    later = NOW + timedelta(hours=4)
    assert not decide(request("ETREAT", at=later), [], [grant]).permit


def test_a_break_glass_reason_must_be_coded_and_written() -> None:
    assert check_break_glass("unconscious", "  送医时昏迷，需查看既往史  ")[1] == "送医时昏迷，需查看既往史"
    with pytest.raises(InvalidBreakGlass):
        check_break_glass("curious", "I would like to look at this record")
    with pytest.raises(InvalidBreakGlass):
        check_break_glass("unconscious", "short")


def test_consent_alone_is_not_enough_without_a_care_relationship() -> None:
    decision = decide(request(), [consent()], care=[])
    assert not decision.permit and codes(decision) == ["care.none"]
    # Another institution's relationship does not count for this one.
    assert codes(decide(request(), [consent()], care=[
        CareRelationship("encounter:e-2", "thc-1")])) == ["care.none"]


def test_an_accepted_referral_is_a_care_relationship_only_while_it_holds() -> None:
    referral = CareRelationship("referral:r-1", "county", NOW - timedelta(days=3),
                                NOW + timedelta(days=1))
    permitted = decide(request(), [consent()], care=[referral])
    assert permitted.permit and permitted.care_basis == "referral:r-1"
    assert codes(decide(request(at=NOW + timedelta(days=1)), [consent()],
                        care=[referral])) == ["care.none"]
    assert codes(decide(request(at=NOW - timedelta(hours=80)), [consent()],
                        care=[referral])) == ["consent.none", "care.none"]
    # Still open (valid_to None): it holds.
    open_ended = CareRelationship("referral:r-2", "county", NOW - timedelta(hours=1))
    assert decide(request(), [consent()], care=[open_ended]).permit
