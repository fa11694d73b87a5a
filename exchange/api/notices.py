"""The patient's notices in the portal (PIPL Art. 18: told afterwards): each emergency
(break-glass) access to their record — which institution, why, when and until when.

The same notice is published once to the patient portal's durable NATS notifications when the
grant is made; this route is where the patient reads them with their own token, from the
audit log (what it says is what the audit recorded of the grant, nothing of the record).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from audit.search import Query
from consent.decision import Decision, Reason
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import json_response

NOTICES = Access(
    "portal.notices",
    roles=frozenset({"patient"}),
    refused_role="a patient reads their own notices with their own token",
)


def _notice(seq: int, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "break_glass",
        "audit_event": f"AuditEvent/{seq}",
        "institution": record.get("institution"),
        "reason_code": record.get("reason_code"),
        "granted_at": record.get("recorded_at"),
        "expires_at": record.get("expires_at"),
    }


class Notices:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def notices(self, call: Call) -> Answer:
        me = UUID(call.who.person)
        root = await self.ctx.records.root(me)
        own = [me, *(await self.ctx.records.members(root) if root else [])]
        query = Query(count=500)
        query.add("patient_id = ANY({0})", sorted(set(own)))
        query.add("action = {0}", "break-glass")
        query.add("decision = {0}", "permit")
        _, rows = await self.ctx.audit.search(query)
        return Answer(
            json_response({"notices": [_notice(seq, r) for seq, r in rows]}, call.request_id),
            Decision(True, [Reason("data_subject.permit", "the patient reads their own notices")]),
            patient_id=root or me,
            purpose="PATRQT",
            disclosed=[f"AuditEvent/{seq}" for seq, _ in rows],
        )


def notice_routes(ctx: ApiContext) -> list[ApiRoute]:
    return [ApiRoute("GET", "/portal/notices", NOTICES, Notices(ctx).notices)]
