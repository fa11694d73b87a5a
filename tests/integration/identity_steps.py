"""The identity steward's steps on the real servers: a member's merge request, and the
steward deciding it over HTTP. Not collected as tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.conftest import Running
from tests.integration.referral_steps import accepted
from tests.integration.test_walking_skeleton import token

REASON = "核对两家机构登记的身份证复印件与出生日期，确认为同一人"


def merge_item(source_id: str, survivor: str, merged: str) -> dict[str, Any]:
    """HL7 ADT^A40 as an item: resident ``merged`` was the same person as ``survivor``."""
    return {
        "source_id": source_id,
        "kind": "merge",
        "payload": {"patient": {"resident_id": survivor}, "merged": {"resident_id": merged}},
    }


def steward(running: Running, person: str = "steward-zhao") -> dict[str, str]:
    return token(running, person, "county", "mpi_steward")


async def request_id(running: Running, reference: str) -> str:
    await running.settle()
    rid = await running.rt.pool.fetchval(
        "SELECT request_id FROM merge_requests WHERE reference = $1", reference
    )
    assert rid is not None, "no merge request"
    return str(rid)


async def decide(
    running: Running, reference: str, decision: str = "approve", reason: str = REASON
) -> httpx.Response:
    """The steward decides the request the member's item ``reference`` made."""
    rid = await request_id(running, reference)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
        return await http.post(
            f"/mpi/merge-requests/{rid}",
            headers=steward(running),
            json={"decision": decision, "reason": reason},
        )


async def merged_by_steward(
    running: Running, institution: str, source_id: str, survivor: str, merged: str
) -> None:
    """A member asks for a merge of two residents and the steward approves it."""
    await accepted(running, institution, [merge_item(source_id, survivor, merged)])
    answer = await decide(running, f"{institution}/{source_id}")
    assert answer.status_code == 200, answer.text
