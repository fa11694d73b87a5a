"""Referrals through the FHIR adapter: ServiceRequest → referral item, Task → the step a party
takes (accept, reject, arrive, back-refer, follow up), and the ways each is refused."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.fhir import read_fhir
from tests.unit.referral_messages import (
    ACTION_SYSTEM,
    COUNTY,
    ICD10,
    INSTITUTION_SYSTEM,
    RID,
    SNOMED,
    TOWNSHIP,
    action_of,
    back_referral,
    bundle,
    referral_of,
    service_request,
    task,
    valid_items,
)


def test_a_referral_service_request_maps_to_a_referral_item() -> None:
    # The township centre's system sends the referral as a ServiceRequest coded as one.
    item = referral_of(read_fhir(bundle(service_request()), institution=TOWNSHIP))
    assert item["source_id"] == "ServiceRequest/sr1"
    assert item["payload"] == {
        "patient": {"resident_id": RID, "mrn": "MR000456"},
        "to_institution": COUNTY,
        "to_department": "神经内科",
        "referring_doctor": "李建国",
        "urgency": "urgent",
        "reason": "疑似急性脑梗死",
        "impression": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
        "history": "高血压病史10年",
        "requested_at": "2026-03-02T10:10:00+08:00",
    }


@pytest.mark.parametrize(
    "priority, urgency",
    [("routine", "routine"), ("urgent", "urgent"), ("asap", "urgent"), ("stat", "emergency")],
)
def test_the_request_priority_is_the_urgency(priority: str, urgency: str) -> None:
    item = referral_of(read_fhir(bundle(service_request(priority=priority)), institution=TOWNSHIP))
    assert item["payload"]["urgency"] == urgency


def test_an_order_to_an_organization_is_a_referral_and_a_condition_its_impression() -> None:
    # No referral code: an order whose performer is the county hospital's Organization
    # (registered with the exchange by its own identifier), for the reason a Condition gives.
    hospital = {
        "resourceType": "Organization",
        "id": "o1",
        "identifier": [{"system": "urn:oid:1.2.156.1", "value": "45600001"}],
    }
    stroke = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]},
    }
    request = service_request(
        category=None,
        reasonCode=None,
        priority=None,
        performer=[{"reference": "Organization/o1"}],
        reasonReference=[{"reference": "Condition/c1"}],
    )
    report = read_fhir(
        bundle(hospital, stroke, request),
        institution=TOWNSHIP,
        institutions={"urn:oid:1.2.156.1|45600001": COUNTY},
    )
    item = referral_of(report)
    assert (item["payload"]["to_institution"], item["payload"]["urgency"]) == (COUNTY, "routine")
    assert item["payload"]["reason"] == "脑梗死"
    assert item["payload"]["impression"] == [
        {"system": ICD10, "code": "I63.9", "display": "脑梗死"}
    ]


def test_a_service_request_that_is_no_referral_is_reported_not_mapped() -> None:
    lab = service_request(
        category=[{"coding": [{"system": SNOMED, "code": "108252007"}]}], performer=None
    )
    report = read_fhir(bundle(lab), institution=TOWNSHIP)
    assert report.problems == [] and "referral" not in valid_items(report)
    assert any("not a referral" in s for s in report.skipped)


@pytest.mark.parametrize(
    "changes, code, where",
    [
        (
            {"performer": [{"reference": "Organization/elsewhere"}]},
            "fhir.referral_institution",
            "performer",
        ),
        ({"status": "revoked"}, "fhir.referral_status", "status"),
        ({"priority": "紧急"}, "fhir.referral_priority", "priority"),
        ({"requester": None}, "fhir.required", "requester"),
        ({"reasonCode": None}, "fhir.required", "reasonCode"),
        ({"authoredOn": "2026-03-02"}, "fhir.datetime_no_timezone", "authoredOn"),
    ],
)
def test_a_referral_that_cannot_be_mapped_is_refused_with_its_path(
    changes: dict[str, Any], code: str, where: str
) -> None:
    report = read_fhir(bundle(service_request(**changes)), institution=TOWNSHIP)
    assert "referral" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        (code, f"Bundle.entry[2].resource.{where}")
    ]


@pytest.mark.parametrize(
    "status, action", [("accepted", "accept"), ("in-progress", "arrive"), ("completed", "complete")]
)
def test_a_task_status_is_the_step_the_receiver_takes(status: str, action: str) -> None:
    # The county hospital answers a referral the township centre sent before.
    step = task(
        status=status, requester={"identifier": {"system": INSTITUTION_SYSTEM, "value": TOWNSHIP}}
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload == {
        "patient": {"resident_id": RID},
        "action": action,
        "referral": f"{TOWNSHIP}/ServiceRequest/sr1",
        "at": "2026-03-02T11:00:00+08:00",
        "by": "王志强",
    }


def test_a_rejection_and_a_cancellation_carry_their_status_reason() -> None:
    reason = {"text": "本院无床位"}
    rejected = action_of(
        read_fhir(bundle(task(status="rejected", statusReason=reason)), institution=COUNTY)
    )
    assert (rejected["action"], rejected["reason"]) == ("reject", "本院无床位")
    # The sender cancels its own referral, sent in the same document.
    cancelled = action_of(
        read_fhir(
            bundle(
                service_request(),
                task(
                    status="cancelled",
                    statusReason={"text": "患者拒绝转诊"},
                    requester={"reference": "Practitioner/dr1"},
                ),
            ),
            institution=TOWNSHIP,
        )
    )
    assert cancelled["referral"] == f"{TOWNSHIP}/ServiceRequest/sr1"
    assert (cancelled["action"], cancelled["reason"], cancelled["by"]) == (
        "cancel",
        "患者拒绝转诊",
        "李建国",
    )


@pytest.mark.parametrize("status", ["rejected", "cancelled"])
def test_a_rejection_or_cancellation_without_a_reason_is_refused(status: str) -> None:
    report = read_fhir(bundle(task(status=status)), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.required", "Bundle.entry[2].resource.statusReason")
    ]


def test_a_back_referral_carries_diagnosis_results_treatment_and_plan() -> None:
    # The county hospital sends the patient back down with what it found and did.
    step = back_referral(
        (
            "diagnosis",
            {
                "valueCodeableConcept": {
                    "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]
                }
            },
        ),
        ("results", {"valueString": "头颅CT：左侧基底节区低密度影"}),
        ("treatment", {"valueString": "溶栓后抗血小板治疗"}),
        ("follow-up-plan", {"valueString": "两周内社区随访血压"}),
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload["action"] == "back_refer"
    assert payload["diagnosis"] == [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]
    assert (payload["results"], payload["treatment"], payload["follow_up_plan"]) == (
        "头颅CT：左侧基底节区低密度影",
        "溶栓后抗血小板治疗",
        "两周内社区随访血压",
    )
    assert payload["notes"] == "出院带药：阿司匹林100mg qd"


def test_a_back_referral_diagnosis_may_be_a_condition_of_the_document() -> None:
    stroke = {
        "resourceType": "Condition",
        "id": "c9",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": "I63.4", "display": "脑栓塞"}]},
    }
    step = back_referral(
        ("diagnosis", {"valueReference": {"reference": "Condition/c9"}}),
        ("follow-up-plan", {"valueString": "两周内社区随访"}),
    )
    report = read_fhir(bundle(stroke, step), institution=COUNTY)
    assert report.problems == []
    [item] = valid_items(report)["referral_action"]
    assert item["payload"]["diagnosis"] == [{"system": ICD10, "code": "I63.4", "display": "脑栓塞"}]


def test_a_back_referral_without_its_plan_is_refused() -> None:
    step = back_referral(
        ("diagnosis", {"valueCodeableConcept": {"coding": [{"system": ICD10, "code": "I63.9"}]}})
    )
    report = read_fhir(bundle(step), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [p.code for p in report.problems] == ["fhir.referral_back_referral"]


def test_a_follow_up_is_a_completed_task_the_sender_sends() -> None:
    step = task(
        status="completed",
        businessStatus={"coding": [{"system": ACTION_SYSTEM, "code": "follow_up"}]},
        requester={"reference": "Practitioner/dr1"},
    )
    payload = action_of(read_fhir(bundle(step), institution=TOWNSHIP))
    assert (payload["action"], payload["by"]) == ("follow_up", "李建国")
    # The same code on a Task still in progress is refused: a follow-up is done when sent.
    early = read_fhir(bundle({**step, "status": "in-progress"}), institution=TOWNSHIP)
    assert [p.code for p in early.problems] == ["fhir.referral_task_status"]


def test_an_acceptance_may_give_the_appointment_and_department_as_outputs() -> None:
    # Outputs typed by text (no code) are read too; the step's code agrees with its status.
    step = task(
        code={"coding": [{"system": ACTION_SYSTEM, "code": "accept"}]},
        output=[
            {"type": {"text": "appointment"}, "valueDateTime": "2026-03-03T08:30:00+08:00"},
            {"type": {"text": "department"}, "valueString": "神经内科二病区"},
        ],
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert (payload["action"], payload["appointment"], payload["department"]) == (
        "accept",
        "2026-03-03T08:30:00+08:00",
        "神经内科二病区",
    )


@pytest.mark.parametrize("code", ["reject", "expire"])
def test_an_action_code_that_contradicts_the_status_is_refused(code: str) -> None:
    step = task(code={"coding": [{"system": ACTION_SYSTEM, "code": code}]})
    report = read_fhir(bundle(step), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.referral_action", "Bundle.entry[2].resource.code")
    ]


def test_a_task_may_name_its_referral_by_the_exchange_reference() -> None:
    step = task(
        focus={
            "identifier": {
                "system": "urn:county-hie:referral",
                "value": f"{TOWNSHIP}/ZZ20260302001",
            }
        }
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload["referral"] == f"{TOWNSHIP}/ZZ20260302001"


@pytest.mark.parametrize(
    "changes, said",
    [
        ({"status": "requested"}, "not a step of the referral yet"),
        ({"focus": {"reference": "Patient/p1"}}, "focus is not a ServiceRequest"),
        ({"focus": None}, "focus is not a ServiceRequest"),
    ],
)
def test_a_task_that_is_no_referral_step_is_reported_not_mapped(
    changes: dict[str, Any], said: str
) -> None:
    report = read_fhir(bundle(task(**changes)), institution=COUNTY)
    assert report.problems == [] and "referral_action" not in valid_items(report)
    assert any(said in s for s in report.skipped)


@pytest.mark.parametrize(
    "changes, code, where",
    [
        ({"status": "on-hold"}, "fhir.referral_task_status", "status"),
        ({"lastModified": None}, "fhir.required", "lastModified"),
        (
            {
                "focus": {
                    "type": "ServiceRequest",
                    "identifier": {"system": "urn:oid:1.2.3", "value": "R-1"},
                }
            },
            "fhir.referral_unresolved",
            "focus",
        ),
        (
            {"focus": {"identifier": {"system": "urn:county-hie:referral", "value": "无效"}}},
            "fhir.referral_reference",
            "focus.identifier",
        ),
        ({"for": None, "focus": {"reference": "ServiceRequest/sr9"}}, "fhir.required", "for"),
    ],
)
def test_a_task_that_cannot_be_mapped_is_refused_with_its_path(
    changes: dict[str, Any], code: str, where: str
) -> None:
    report = read_fhir(bundle(task(**changes)), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        (code, f"Bundle.entry[2].resource.{where}")
    ]


def test_a_lab_order_to_the_regional_laboratory_and_its_task_are_no_referral() -> None:
    # A township centre sends a blood sample to the county's laboratory: an order to another
    # organisation, but a lab test, not a referral of the patient; its Task is the lab's work.
    lab = {"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}
    hba1c = {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}
    for changes in ({"category": [lab]}, {"category": None, "code": hba1c}):
        order = service_request(**changes)
        report = read_fhir(bundle(order, task(status="completed")), institution=COUNTY)
        assert report.problems == []
        assert [i["kind"] for i in report.items] == ["patient"]
        assert any("ServiceRequest that is not a referral" in s for s in report.skipped)
        assert any("not a referral; not mapped" in s for s in report.skipped)
