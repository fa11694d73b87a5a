"""The rules beside decide(): who reads a patient's consents, and a patient's access
history about themself only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from consent.decision import (
    AccessPolicy,
    AccessRequest,
    CareRelationship,
    Facts,
    SealRecord,
    is_own_record,
    may_read_consents,
    own_audit_only,
)

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PID = UUID("11111111-1111-4111-8111-111111111111")
CARE = CareRelationship("encounter:e1", "county", NOW - timedelta(days=1), None)


def asked(
    role: str = "physician",
    purpose: str = "TREAT",
    *,
    own: bool = False,
    institution: str = "county",
) -> AccessRequest:
    return AccessRequest("dr-li", role, institution, PID, purpose, NOW, 10, own)


def test_the_patient_reads_their_own_consents_as_the_data_subject() -> None:
    decision = may_read_consents(asked("patient", "", own=True), Facts())
    assert decision.permit and decision.legal_basis == "data-subject"
    assert not may_read_consents(asked("patient", "", own=False), Facts(care=[CARE])).permit


def test_a_clinician_reads_them_with_treat_while_their_institution_gives_care() -> None:
    decision = may_read_consents(asked(), Facts(care=[CARE]))
    assert decision.permit and decision.legal_basis == "care"
    assert may_read_consents(asked("nurse"), Facts(care=[CARE])).permit


@pytest.mark.parametrize(
    ("request_", "facts"),
    [
        (asked(purpose="ETREAT"), Facts(care=[CARE])),  # not treating
        (asked(purpose=""), Facts(care=[CARE])),
        (asked(), Facts()),  # no care relationship
        (asked(institution="thc-east"), Facts(care=[CARE])),  # another institution's care
        (asked(), Facts(care=[CareRelationship("record:r", "county", None, NOW)])),  # ended
        (asked("regulator"), Facts(care=[CARE])),
        (asked("admin"), Facts(care=[CARE])),
        (asked(), Facts(care=[CARE], seals=[SealRecord(("county/dr-wang",), 5)])),  # sealed
    ],
    ids=[
        "etreat",
        "no-purpose",
        "no-care",
        "other-institution",
        "care-ended",
        "regulator",
        "admin",
        "sealed",
    ],
)
def test_anyone_else_is_refused(request_: AccessRequest, facts: Facts) -> None:
    decision = may_read_consents(request_, facts)
    assert not decision.permit and decision.reasons[0].code == "consent.not_permitted"


def test_a_seal_that_names_the_reader_or_is_lifted_does_not_stand_in_the_way() -> None:
    named = SealRecord(("county/dr-li",), 5)
    lifted = SealRecord(("county/dr-wang",), 5, unsealed_position=8)
    later = SealRecord(("county/dr-wang",), 11)  # sealed after the decision's position
    for seal in (named, lifted, later):
        assert may_read_consents(asked(), Facts(care=[CARE], seals=[seal])).permit


def test_the_policy_names_the_clinical_roles() -> None:
    physicians_only = AccessPolicy(clinical_roles=("physician",))
    assert not may_read_consents(asked("nurse"), Facts(care=[CARE]), physicians_only).permit


def test_a_patient_asks_for_their_own_access_history_only() -> None:
    me = str(PID)
    assert own_audit_only("patient", me, me) is None
    assert own_audit_only("patient", me, "") is None  # then limited to their own rows
    refusal = own_audit_only("patient", me, "22222222-2222-4222-8222-222222222222")
    assert refusal is not None and refusal.code == "role.not_own_record"
    assert own_audit_only("regulator", "reg-1", me) is None


def test_a_patient_token_is_the_patient_under_any_of_their_merged_ids() -> None:
    merged = UUID("22222222-2222-4222-8222-222222222222")
    assert is_own_record("patient", str(merged), [PID, merged])
    assert not is_own_record("patient", "33333333-3333-4333-8333-333333333333", [PID, merged])
    assert not is_own_record("physician", str(PID), [PID])  # a clinician named like an id
