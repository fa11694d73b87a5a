"""The demo county's referrals: one loop run up to the back-referral (the township's follow-up
falls due in two weeks) and one village referral waiting in the township's inbox.

Each step is its own signed submission with fixed content, so a second `hie demo` finds every
step held and sends nothing again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.envelope import build_envelope
from adapters.nats import SubmitClient
from domain.submission import submission_key
from exchange.bootstrap import Runtime
from exchange.demo.data import DemoResident

SENT_AT = datetime(2026, 11, 2, tzinfo=UTC)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
HYPERTENSION = {
    "system": ICD10,
    "code": "I10",
    "version": "国家临床版2.0",
    "display": "原发性高血压",
}


def _request(resident: DemoResident, source_id: str, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral",
        "payload": {
            "patient": {"resident_id": resident.resident_id},
            "to_institution": to,
            "referring_doctor": "王医生",
            "urgency": "routine",
            "from_department": "全科",
            "requested_at": SENT_AT.isoformat(),
            **extra,
        },
    }


def _step(
    resident: DemoResident, source_id: str, ref: str, action: str, **extra: Any
) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral_action",
        "payload": {
            "patient": {"resident_id": resident.resident_id},
            "referral": ref,
            "action": action,
            "at": SENT_AT.isoformat(),
            **extra,
        },
    }


def demo_steps(residents: list[DemoResident]) -> list[tuple[str, dict[str, Any]]]:
    """(sending institution, item) in the order they happen."""
    up, village = residents[0], residents[1]
    ref = "dongcheng-thc/DEMO-REF-1"
    return [
        (
            "dongcheng-thc",
            _request(
                up,
                "DEMO-REF-1",
                "county-hospital",
                to_department="心血管内科",
                reason="三种降压药联用血压仍控制不佳",
                impression=[HYPERTENSION],
                history="高血压病史 8 年",
                treatment="氨氯地平 5mg qd、氢氯噻嗪 12.5mg qd",
            ),
        ),
        (
            "county-hospital",
            _step(up, "DEMO-REF-1-accept", ref, "accept", by="李主任", department="心血管内科"),
        ),
        ("county-hospital", _step(up, "DEMO-REF-1-arrive", ref, "arrive")),
        ("county-hospital", _step(up, "DEMO-REF-1-complete", ref, "complete")),
        (
            "county-hospital",
            _step(
                up,
                "DEMO-REF-1-back",
                ref,
                "back_refer",
                by="李主任",
                diagnosis=[HYPERTENSION],
                results="24 小时动态血压平均 150/95 mmHg",
                treatment="改为缬沙坦氨氯地平片",
                follow_up_plan="两周内乡镇卫生院随访血压，每日家庭自测",
            ),
        ),
        (
            "taoyuan-vc",
            _request(
                village,
                "DEMO-REF-2",
                "dongcheng-thc",
                reason="血糖控制不佳，需调整用药",
                impression=[{"system": ICD10, "code": "E11.9", "display": "2型糖尿病"}],
            ),
        ),
    ]


async def seed_referrals(
    rt: Runtime, keys: dict[str, Any], residents: list[DemoResident]
) -> list[dict[str, Any]]:
    receipts = []
    for institution, item in demo_steps(residents):
        envelope = build_envelope(
            institution=institution,
            items=[item],
            key=keys[institution],
            sent_at=datetime.now(UTC),  # when it is sent; the ids come from the content
        )
        key = submission_key(institution, envelope["submission_id"])
        if await rt.sync(rt.ledger.positions_of, [key]):
            receipts.append({"status": "held"})
            continue
        client = SubmitClient(rt.nc, rt.settings.consortium, institution)
        receipts.append((await client.submit([envelope]))[envelope["submission_id"]])
    return receipts
