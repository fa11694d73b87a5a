"""The steps referral scenarios on the real servers share: a consortium of institutions, a
referral and a step by a party, submissions that must be accepted or refused, the
notifications an institution receives, and waiting for a condition. Not collected as tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from adapters.nats import NotificationClient
from tests.integration.conftest import Running
from tests.integration.test_walking_skeleton import submit


def referral(
    rid: str, source_id: str, to: str = "county", urgency: str = "routine", **extra: Any
) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral",
        "payload": {
            "patient": {"resident_id": rid},
            "to_institution": to,
            "urgency": urgency,
            "from_department": "全科",
            "to_department": "心血管内科",
            "referring_doctor": "张医生",
            "reason": "血压控制不佳，三种降压药联用后仍高于 160/100 mmHg",
            "impression": [
                {
                    "system": "http://hl7.org/fhir/sid/icd-10",
                    "code": "I10",
                    "version": "国家临床版2.0",
                    "display": "原发性高血压",
                }
            ],
            "history": "高血压病史 8 年",
            "treatment": "氨氯地平 5mg qd",
            "requested_at": datetime.now(UTC).isoformat(),
            **extra,
        },
    }


def step(rid: str, source_id: str, ref: str, action: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "referral_action",
        "payload": {
            "patient": {"resident_id": rid},
            "referral": ref,
            "action": action,
            "at": datetime.now(UTC).isoformat(),
            **extra,
        },
    }


BACK = {
    "diagnosis": [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "原发性高血压"}
    ],
    "results": "动态血压平均 152/96 mmHg；心超未见异常",
    "treatment": "调整为氨氯地平 + 缬沙坦",
    "follow_up_plan": "两周内社区随访血压，每日自测",
    "by": "李主任",
}


async def consortium(running: Running) -> None:
    await running.register("thc-east", "township_health_centre", "东城镇卫生院")
    await running.register("county", "county_hospital", "县人民医院")
    await running.register("vc-peach", "village_clinic", "桃源村卫生室")


async def accepted(running: Running, institution: str, items: list[dict[str, Any]]) -> None:
    receipt = await submit(running, institution, items)
    assert receipt["status"] == "accepted", receipt.get("problems")


async def refused(running: Running, institution: str, items: list[dict[str, Any]]) -> dict:
    receipt = await submit(running, institution, items)
    assert receipt["status"] == "rejected"
    return receipt["problems"][0]  # type: ignore[no-any-return]


async def notes(
    running: Running, institution: str, want: int, *, fetches: int = 100
) -> list[dict[str, Any]]:
    """The institution's next notifications: until ``want`` came, or ``fetches`` fetches of
    0.3 s each found no more (few fetches: that nothing more is waiting)."""
    client = NotificationClient(running.rt.nc, running.rt.settings.consortium, institution)
    got: list[dict[str, Any]] = []
    try:
        for _ in range(fetches):
            got += await client.fetch(batch=50, timeout=0.3)
            if len(got) >= want:
                break
        return got
    finally:
        await client.close()


async def referral_rows(running: Running) -> tuple[list[Any], list[Any]]:
    pool = running.rt.pool
    return (
        [dict(r) for r in await pool.fetch("SELECT * FROM referrals ORDER BY referral_id")],
        [
            dict(r)
            for r in await pool.fetch("SELECT * FROM referral_events ORDER BY referral_id, version")
        ],
    )


async def until(check: Any, timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)
