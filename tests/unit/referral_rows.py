"""One synthetic upward referral (a township health centre to the county hospital) and the rows
the projection holds for it, as the referral notification and FHIR view tests read them.
Synthetic data only; not collected as tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from domain.referral import referral_id

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 10, 15, tzinfo=CST)  # when the exchange received the request
TOWNSHIP = "dongcheng-thc"  # the referring township health centre
COUNTY = "county-hosp"  # the county hospital it refers to
REFERENCE = f"{TOWNSHIP}/ZZ20260302001"
RID = referral_id(REFERENCE)
PATIENT = UUID("6f1c2d3e-0000-4000-8000-00000000a001")  # a made-up regional patient id
ICD10 = "http://hl7.org/fhir/sid/icd-10"
REASON = "疑似急性脑梗死，需上级医院进一步诊治"
CONTENT: dict[str, Any] = {
    "to_institution": COUNTY,
    "to_department": "神经内科",
    "referring_doctor": "李建国",
    "urgency": "urgent",
    "reason": REASON,
    "impression": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
    "history": "高血压病史十年",
    "treatment": "已予阿司匹林口服",
    "requested_at": "2026-03-02T10:10:00+08:00",
}
BACK_REFERRAL: dict[str, Any] = {
    "referral": REFERENCE,
    "action": "back_refer",
    "at": "2026-03-09T16:00:00+08:00",
    "by": "王志强",
    "diagnosis": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
    "results": "头颅MRI示左侧基底节区急性梗死灶",
    "treatment": "溶栓后康复治疗",
    "follow_up_plan": "两周内社区随访血压，继续抗血小板治疗",
}


def step_row(action: str, status: str, actor: str | None, **changes: Any) -> dict[str, Any]:
    """One row as the reader's events_after returns it: the step joined with its referral."""
    row: dict[str, Any] = {
        "position": 41,
        "version": 2,
        "action": action,
        "status": status,
        "actor": actor,
        "at": T0 + timedelta(hours=1),
        "referral_id": RID,
        "reference": REFERENCE,
        "patient_id": PATIENT,
        "direction": "upward",
        "from_institution": TOWNSHIP,
        "to_institution": COUNTY,
        "urgency": "urgent",
        "deadline": T0 + timedelta(hours=24),
        "follow_up_due": None,
        "overdue": False,
    }
    return row | changes


def referral_row(**changes: Any) -> dict[str, Any]:
    """A ``referrals`` row; ``content`` as PostgreSQL's jsonb comes back through the driver."""
    row: dict[str, Any] = {
        "referral_id": RID,
        "reference": REFERENCE,
        "patient_id": PATIENT,
        "direction": "upward",
        "from_institution": TOWNSHIP,
        "to_institution": COUNTY,
        "urgency": "urgent",
        "status": "requested",
        "content": json.dumps(CONTENT, ensure_ascii=False),
        "requested_at": T0,
        "decided_at": None,
        "accepted_at": None,
        "arrived_at": None,
        "completed_at": None,
        "back_referred_at": None,
        "followed_up_at": None,
        "closed_at": None,
        "rejection_reason": None,
        "back_referral": None,
        "deadline": T0 + timedelta(hours=24),
        "follow_up_due": None,
        "overdue": False,
        "care_from": None,
        "care_until": None,
        "position": 40,
        "updated": 40,
    }
    return row | changes


def event_row(
    action: str, status: str, institution: str | None, details: Any, **changes: Any
) -> dict[str, Any]:
    """A ``referral_events`` row."""
    row: dict[str, Any] = {
        "referral_id": RID,
        "version": 5,
        "action": action,
        "status": status,
        "institution": institution,
        "at": T0 + timedelta(days=7),
        "reported_at": None,
        "details": details,
        "position": 57,
    }
    return row | changes
