"""The referral views without servers: the ServiceRequest/Task/inbox rows built from the
projection's rows (validated as FHIR R4B). The policy file and the notifications are tested
beside it (test_referral_policy_file.py, test_referral_notifications.py). Synthetic data only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from domain.referral import STATES
from exchange.api.referral_fhir import (
    SERVICE_REQUEST_STATUS,
    TASK_STATUS,
    box_row,
    service_request,
    task,
)
from tests.unit.referral_rows import (
    BACK_REFERRAL,
    CONTENT,
    COUNTY,
    CST,
    ICD10,
    PATIENT,
    REASON,
    REFERENCE,
    RID,
    T0,
    TOWNSHIP,
    event_row,
    referral_row,
)

# The value sets of FHIR R4's required bindings, which the fhir.resources models do not check.
REQUEST_STATUS = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
REQUEST_INTENT = {
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
}
REQUEST_PRIORITY = {"routine", "urgent", "asap", "stat"}
TASK_STATUS_CODES = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}
TASK_INTENT = {
    "unknown",
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
}


# FHIR: ServiceRequest, Task, inbox rows -----------------------------------------------------------


def extension(resource: dict[str, Any], name: str) -> Any:
    found = [e for e in resource["extension"] if e["url"].endswith(":" + name)]
    assert len(found) <= 1
    return found[0] if found else None


def assert_fhir_json(value: Any, where: str = "$") -> None:
    """FHIR JSON has no nulls and no empty arrays or objects (the models drop them silently,
    so check the dict as it is sent)."""
    assert value is not None and value != [] and value != {}, f"{where} is empty"
    if isinstance(value, dict):
        for key, inner in value.items():
            assert_fhir_json(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            assert_fhir_json(inner, f"{where}[{i}]")


def test_the_status_tables_cover_every_referral_state_exactly() -> None:
    assert set(SERVICE_REQUEST_STATUS) == set(STATES)
    assert set(TASK_STATUS) == set(STATES)
    assert set(SERVICE_REQUEST_STATUS.values()) <= REQUEST_STATUS
    assert set(TASK_STATUS.values()) <= TASK_STATUS_CODES


@pytest.mark.parametrize(
    ("state", "request_status", "task_status"),
    [
        ("requested", "active", "requested"),
        ("accepted", "active", "accepted"),
        ("rejected", "revoked", "rejected"),
        ("arrived", "active", "in-progress"),
        ("completed", "active", "completed"),
        ("back_referred", "active", "completed"),
        ("followed_up", "completed", "completed"),
        ("cancelled", "revoked", "cancelled"),
        ("expired", "revoked", "failed"),
    ],
)
def test_each_state_maps_to_its_fhir_status(
    state: str, request_status: str, task_status: str
) -> None:
    # The loop stays open (active) until the follow-up; a refused or dead referral is revoked.
    assert service_request(referral_row(status=state), T0)["status"] == request_status
    step = task(event_row("step", state, COUNTY, {}), PATIENT)
    assert step["status"] == task_status
    assert step["businessStatus"]["coding"][0]["code"] == state


@pytest.mark.parametrize(
    ("urgency", "priority"), [("emergency", "stat"), ("urgent", "urgent"), ("routine", "routine")]
)
def test_urgency_maps_to_priority(urgency: str, priority: str) -> None:
    assert service_request(referral_row(urgency=urgency), T0)["priority"] == priority


@pytest.mark.parametrize(
    "content", [CONTENT, json.dumps(CONTENT, ensure_ascii=False)], ids=["dict", "json-text"]
)
def test_the_service_request_names_parties_reason_and_notes(content: Any) -> None:
    resource = service_request(referral_row(content=content), T0)
    assert resource["id"] == str(RID)
    assert resource["identifier"] == [{"system": "urn:county-hie:referral", "value": REFERENCE}]
    assert resource["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert resource["requester"] == {"reference": f"Organization/{TOWNSHIP}", "display": "李建国"}
    assert resource["performer"] == [{"reference": f"Organization/{COUNTY}"}]
    assert resource["performerType"] == {"text": "神经内科"}
    assert resource["reasonCode"] == [
        {"coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}], "text": REASON}
    ]
    assert resource["note"] == [
        {"text": "History: 高血压病史十年"},
        {"text": "Treatment so far: 已予阿司匹林口服"},
    ]
    assert resource["authoredOn"] == "2026-03-02T10:10:00+08:00"
    assert resource["category"][0]["text"].startswith("上转")
    assert extension(resource, "referral-deadline")["valueDateTime"] == "2026-03-03T10:15:00+08:00"


def test_a_request_without_optional_content_has_no_empty_parts() -> None:
    bare = {
        k: v
        for k, v in CONTENT.items()
        if k not in ("impression", "history", "treatment", "to_department")
    }
    resource = service_request(referral_row(content=bare, direction="downward"), T0)
    # No impression: the reason is text only, without an empty coding list.
    assert resource["reasonCode"] == [{"text": REASON}]
    assert "note" not in resource and "performerType" not in resource
    assert resource["category"][0]["text"].startswith("下转")


@pytest.mark.parametrize(
    ("overdue", "due_in", "followed_up", "expected"),
    [
        (False, timedelta(days=3), False, False),  # before the due time
        (False, timedelta(0), False, True),  # the due time has come without a follow-up
        (False, -timedelta(days=1), False, True),  # passed, the scheduler has not flagged it yet
        (True, -timedelta(days=1), False, True),  # flagged by the scheduler
        (True, timedelta(days=3), False, True),  # the flag wins over a clock behind the ledger's
        (False, -timedelta(days=1), True, False),
    ],
)  # followed up (late, but done)
def test_the_follow_up_overdue_extension(
    overdue: bool, due_in: timedelta, followed_up: bool, expected: bool
) -> None:
    now = T0 + timedelta(days=20)
    row = referral_row(
        status="followed_up" if followed_up else "back_referred",
        deadline=None,
        follow_up_due=now + due_in,
        overdue=overdue,
        followed_up_at=now - timedelta(hours=1) if followed_up else None,
    )
    resource = service_request(row, now)
    assert extension(resource, "follow-up-overdue") == {
        "url": "urn:county-hie:fhir:StructureDefinition:follow-up-overdue",
        "valueBoolean": expected,
    }
    assert extension(resource, "follow-up-due")["valueDateTime"] == (now + due_in).isoformat()
    assert extension(resource, "referral-deadline") is None


def test_no_follow_up_extensions_before_the_back_referral() -> None:
    resource = service_request(referral_row(status="arrived"), T0)
    assert extension(resource, "follow-up-due") is None
    assert extension(resource, "follow-up-overdue") is None
    assert extension(resource, "referral-status") == {
        "url": "urn:county-hie:fhir:StructureDefinition:referral-status",
        "valueCode": "arrived",
    }


@pytest.mark.parametrize(
    "details",
    [BACK_REFERRAL, json.dumps(BACK_REFERRAL, ensure_ascii=False)],
    ids=["dict", "json-text"],
)
def test_the_back_referral_task_gives_diagnosis_results_and_plan(details: Any) -> None:
    reported = datetime(2026, 3, 9, 16, 0, tzinfo=CST)
    step = task(
        event_row("back_refer", "back_referred", COUNTY, details, reported_at=reported), PATIENT
    )
    assert step["id"] == f"{RID}-5"
    assert step["status"] == "completed"
    assert step["code"]["coding"][0]["code"] == "back_refer"
    assert step["focus"] == {"reference": f"ServiceRequest/{RID}"}
    assert step["for"] == {"reference": f"Patient/{PATIENT}"}
    assert step["owner"] == {"reference": f"Organization/{COUNTY}"}
    assert step["requester"] == {"display": "王志强"}
    assert step["executionPeriod"] == {"start": reported.isoformat()}
    outputs = {o["type"]["text"]: o for o in step["output"]}
    assert outputs["diagnosis"]["valueCodeableConcept"] == {
        "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]
    }
    assert outputs["results"]["valueString"] == BACK_REFERRAL["results"]
    assert outputs["treatment"]["valueString"] == BACK_REFERRAL["treatment"]
    assert outputs["follow-up plan"]["valueString"] == BACK_REFERRAL["follow_up_plan"]


def test_a_rejection_task_gives_its_reason() -> None:
    step = task(event_row("reject", "rejected", COUNTY, {"reason": "本院无神经介入条件"}), PATIENT)
    assert step["statusReason"] == {"text": "本院无神经介入条件"}
    assert "output" not in step


def test_the_overdue_mark_is_the_scheduler_flagging_a_pending_follow_up() -> None:
    due = T0 + timedelta(days=21)
    step = task(
        event_row("mark_overdue", "back_referred", None, json.dumps({"due": due.isoformat()})),
        PATIENT,
    )
    assert step["status"] == "in-progress"
    assert step["businessStatus"]["coding"] == [
        {"system": "urn:county-hie:referral-status", "code": "follow_up_overdue"}
    ]
    # No institution took the step: the owner is named, not referenced.
    assert step["owner"] == {"display": "the exchange's referral scheduler"}


def test_an_expiry_task_is_owned_by_the_scheduler() -> None:
    step = task(event_row("expire", "expired", None, {}), PATIENT)
    assert step["status"] == "failed"
    assert "reference" not in step["owner"] and step["owner"]["display"]


@pytest.mark.parametrize(
    ("deadline_in", "passed"),
    [(timedelta(hours=1), False), (timedelta(0), True), (-timedelta(seconds=1), True)],
)
def test_the_box_row_flags_a_passed_deadline(deadline_in: timedelta, passed: bool) -> None:
    now = T0 + timedelta(hours=10)
    row = box_row(referral_row(deadline=now + deadline_in), now)
    assert row["deadline_passed"] is passed
    assert row["deadline"] == (now + deadline_in).isoformat()
    assert row["follow_up_overdue"] is False


@pytest.mark.parametrize(
    ("overdue", "due_in", "followed_up", "expected"),
    [
        (False, timedelta(days=1), False, False),
        (False, timedelta(0), False, True),
        (True, timedelta(days=1), False, True),
        (False, -timedelta(days=1), True, False),
    ],
)
def test_the_box_row_flags_an_overdue_follow_up(
    overdue: bool, due_in: timedelta, followed_up: bool, expected: bool
) -> None:
    now = T0 + timedelta(days=20)
    row = box_row(
        referral_row(
            status="back_referred",
            deadline=None,
            overdue=overdue,
            follow_up_due=now + due_in,
            followed_up_at=now if followed_up else None,
        ),
        now,
    )
    assert row["follow_up_overdue"] is expected
    assert row["deadline_passed"] is False and row["deadline"] is None


def test_the_box_row_carries_no_clinical_content() -> None:
    row = box_row(referral_row(back_referral=json.dumps(BACK_REFERRAL, ensure_ascii=False)), T0)
    assert set(row) == {
        "referral",
        "service_request",
        "patient_id",
        "direction",
        "from_institution",
        "to_institution",
        "urgency",
        "status",
        "requested_at",
        "deadline",
        "deadline_passed",
        "follow_up_due",
        "follow_up_overdue",
    }
    assert REASON not in json.dumps(row, ensure_ascii=False)
    assert row["requested_at"] == T0.isoformat() and row["patient_id"] == str(PATIENT)


@pytest.mark.parametrize("state", STATES)
def test_every_service_request_is_valid_fhir_r4(state: str) -> None:
    followed = state == "followed_up"
    back = state in ("back_referred", "followed_up")
    row = referral_row(
        status=state,
        deadline=None if back else T0 + timedelta(hours=24),
        follow_up_due=T0 + timedelta(days=21) if back else None,
        followed_up_at=T0 + timedelta(days=20) if followed else None,
    )
    for content in (
        CONTENT,
        {k: v for k, v in CONTENT.items() if k not in ("impression", "history", "treatment")},
    ):
        resource = service_request(row | {"content": content}, T0 + timedelta(days=22))
        assert_fhir_json(resource)
        model = ServiceRequest.model_validate(resource)
        assert model.status in REQUEST_STATUS and model.intent in REQUEST_INTENT
        assert model.priority in REQUEST_PRIORITY
        assert model.reasonCode[0].text == REASON


@pytest.mark.parametrize(
    ("action", "status", "institution", "details"),
    [
        ("request", "requested", TOWNSHIP, {}),
        (
            "accept",
            "accepted",
            COUNTY,
            {
                "at": "2026-03-02T11:00:00+08:00",
                "by": "王志强",
                "department": "神经内科",
                "appointment": "2026-03-03T09:00:00+08:00",
            },
        ),
        ("reject", "rejected", COUNTY, {"reason": "本院无神经介入条件"}),
        ("arrive", "arrived", COUNTY, {"notes": "患者由家属陪同到院"}),
        ("complete", "completed", COUNTY, {}),
        ("back_refer", "back_referred", COUNTY, BACK_REFERRAL),
        ("follow_up", "followed_up", TOWNSHIP, {"notes": "血压 138/86，继续服药"}),
        ("cancel", "cancelled", TOWNSHIP, {"reason": "患者拒绝转诊"}),
        ("expire", "expired", None, {}),
        ("mark_overdue", "back_referred", None, {"due": "2026-03-23T10:15:00+08:00"}),
    ],
)
def test_every_task_is_valid_fhir_r4(
    action: str, status: str, institution: str | None, details: dict[str, Any]
) -> None:
    reported = T0 if institution else None
    step = task(
        event_row(
            action,
            status,
            institution,
            json.dumps(details, ensure_ascii=False),
            reported_at=reported,
        ),
        PATIENT,
    )
    assert_fhir_json(step)
    model = Task.model_validate(step)
    assert model.status in TASK_STATUS_CODES and model.intent in TASK_INTENT
    assert model.for_fhir is not None and model.for_fhir.reference == f"Patient/{PATIENT}"
