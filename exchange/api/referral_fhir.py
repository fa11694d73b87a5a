"""Referrals as FHIR R4: the referral as a ``ServiceRequest``, each step of it as a ``Task``
(its status history), and the inbox/outbox rows as plain JSON with their flags."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from consent.facts import ReferralRecord
from domain.referral import RECEIVER, SENDER

_EXT = "urn:county-hie:fhir:StructureDefinition:"
REFERRAL_SYSTEM = "urn:county-hie:referral"
STATUS_SYSTEM = "urn:county-hie:referral-status"
# The loop is open until the follow-up: only then is the ServiceRequest completed.
SERVICE_REQUEST_STATUS = {
    "requested": "active",
    "accepted": "active",
    "arrived": "active",
    "completed": "active",
    "back_referred": "active",
    "followed_up": "completed",
    "rejected": "revoked",
    "cancelled": "revoked",
    "expired": "revoked",
}
TASK_STATUS = {
    "requested": "requested",
    "accepted": "accepted",
    "rejected": "rejected",
    "arrived": "in-progress",
    "completed": "completed",
    "back_referred": "completed",
    "followed_up": "completed",
    "cancelled": "cancelled",
    "expired": "failed",
}
PRIORITY = {"emergency": "stat", "urgent": "urgent", "routine": "routine"}
# The clinical content was left out: this institution sees where the referral stands only.
REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _concept(codings: list[dict[str, Any]], text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if codings:  # FHIR JSON has no empty arrays: an impression-less reason is text only
        concept["coding"] = [
            {k: c[k] for k in ("system", "version", "code", "display") if c.get(k)} for c in codings
        ]
    if text:
        concept["text"] = text
    return concept


# When the loop closed for the sender, by the state it closed in.
_CLOSED_AT = {
    "followed_up": "followed_up_at",
    "rejected": "decided_at",
    "cancelled": "closed_at",
    "expired": "closed_at",
}


def referral_record(row: Any) -> ReferralRecord:
    """A referral view's row as the rule on its content (consent/referrals.py) takes it."""
    closed = _CLOSED_AT.get(row["status"])
    return ReferralRecord(
        row["referral_id"],
        row["from_institution"],
        row["to_institution"],
        row["status"],
        row["requested_at"],
        row["care_from"],
        row["care_until"],
        row[closed] if closed else None,
    )


def author(row: Any, institution: str | None) -> str | None:
    """Which party of the referral wrote a step ("sender", "receiver"; None: the exchange)."""
    if institution is None:
        return None
    return SENDER if institution == row["from_institution"] else RECEIVER


def service_request(row: Any, now: datetime, *, content_shown: bool = True) -> dict[str, Any]:
    content = (
        _json(row["content"])
        if content_shown
        else {k: v for k, v in _json(row["content"]).items() if k == "requested_at"}
    )
    rid = str(row["referral_id"])
    notes = [
        {"text": f"{label}: {content[key]}"}
        for key, label in (("history", "History"), ("treatment", "Treatment so far"))
        if content.get(key)
    ]
    extensions: list[dict[str, Any]] = [
        {"url": _EXT + "referral-status", "valueCode": row["status"]},
        {"url": _EXT + "referral-direction", "valueCode": row["direction"]},
    ]
    deadline = row["deadline"]
    if deadline is not None:
        extensions.append({"url": _EXT + "referral-deadline", "valueDateTime": _iso(deadline)})
    if row["follow_up_due"] is not None:
        extensions.append(
            {"url": _EXT + "follow-up-due", "valueDateTime": _iso(row["follow_up_due"])}
        )
        extensions.append(
            {
                "url": _EXT + "follow-up-overdue",
                "valueBoolean": bool(
                    row["overdue"]
                    or (row["followed_up_at"] is None and row["follow_up_due"] <= now)
                ),
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "meta": {"versionId": str(row["updated"])},
        "extension": extensions,
        "identifier": [{"system": REFERRAL_SYSTEM, "value": row["reference"]}],
        "status": SERVICE_REQUEST_STATUS[row["status"]],
        "intent": "order",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "3457005",
                        "display": "Patient referral",
                    }
                ],
                "text": "上转 upward referral"
                if row["direction"] == "upward"
                else "下转 downward referral",
            }
        ],
        "priority": PRIORITY[row["urgency"]],
        "subject": {"reference": f"Patient/{row['patient_id']}"},
        "authoredOn": content.get("requested_at"),
        "requester": {
            "reference": f"Organization/{row['from_institution']}",
            **({"display": content["referring_doctor"]} if content.get("referring_doctor") else {}),
        },
        "performer": [{"reference": f"Organization/{row['to_institution']}"}],
    }
    if reason := _concept(content.get("impression") or [], content.get("reason")):
        resource["reasonCode"] = [reason]
    if not content_shown:
        resource["meta"]["security"] = [REDACTED]
    if content.get("to_department"):
        resource["performerType"] = {"text": content["to_department"]}
    if notes:
        resource["note"] = notes
    return resource


def task(row: Any, patient_id: Any, *, content_shown: bool = True) -> dict[str, Any]:
    details = (_json(row["details"]) or {}) if content_shown else {}
    rid = str(row["referral_id"])
    overdue = row["action"] == "mark_overdue"
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": f"{rid}-{row['version']}",
        "meta": {"versionId": str(row["position"])},
        "status": "in-progress" if overdue else TASK_STATUS[row["status"]],
        "businessStatus": {
            "coding": [
                {"system": STATUS_SYSTEM, "code": "follow_up_overdue" if overdue else row["status"]}
            ]
        },
        "intent": "order",
        "code": {"coding": [{"system": "urn:county-hie:referral-action", "code": row["action"]}]},
        "focus": {"reference": f"ServiceRequest/{rid}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _iso(row["at"]),
        "lastModified": _iso(row["at"]),
        "owner": (
            {"reference": f"Organization/{row['institution']}"}
            if row["institution"]
            else {"display": "the exchange's referral scheduler"}
        ),
    }
    if not content_shown:
        resource["meta"]["security"] = [REDACTED]
    if row["reported_at"] is not None:
        resource["executionPeriod"] = {"start": _iso(row["reported_at"])}
    if details.get("reason"):
        resource["statusReason"] = {"text": details["reason"]}
    notes = [details[k] for k in ("notes",) if details.get(k)]
    if details.get("by"):
        resource["requester"] = {"display": details["by"]}
    if notes:
        resource["note"] = [{"text": n} for n in notes]
    outputs = []
    if details.get("diagnosis"):
        outputs.append(
            {"type": {"text": "diagnosis"}, "valueCodeableConcept": _concept(details["diagnosis"])}
        )
    for key, label in (
        ("results", "results"),
        ("treatment", "treatment"),
        ("follow_up_plan", "follow-up plan"),
        ("department", "department"),
        ("appointment", "appointment"),
    ):
        if details.get(key):
            outputs.append({"type": {"text": label}, "valueString": details[key]})
    if outputs:
        resource["output"] = outputs
    return resource


def box_row(row: Any, now: datetime) -> dict[str, Any]:
    """One referral of an inbox or outbox: where it stands and what is late, no content."""
    deadline, due = row["deadline"], row["follow_up_due"]
    return {
        "referral": row["reference"],
        "service_request": f"ServiceRequest/{row['referral_id']}",
        "patient_id": str(row["patient_id"]),
        "direction": row["direction"],
        "from_institution": row["from_institution"],
        "to_institution": row["to_institution"],
        "urgency": row["urgency"],
        "status": row["status"],
        "requested_at": _iso(row["requested_at"]),
        "deadline": _iso(deadline),
        "deadline_passed": deadline is not None and deadline <= now,
        "follow_up_due": _iso(due),
        "follow_up_overdue": bool(
            row["overdue"] or (due is not None and row["followed_up_at"] is None and due <= now)
        ),
    }
