"""The regulator's view of sealed records (病历封存), and lifting a seal.

A seal keeps a record from everyone but the persons it names; a member seals only records it
holds and lifts only its own seals. The regulator sees every seal in force and may lift any
of them (a dispute settled, a sealing member gone, a seal used to keep a record from the
patient's other doctors); the lift enters the ledger through the regulator's desk, and the
request is audited naming the patient.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from consent.decision import Decision, Reason
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused, json_response

ONLY_REGULATORS = "only a regulator lists or lifts seals"
SEALS = Access("audit-seals", roles=frozenset({"regulator"}), refused_role=ONLY_REGULATORS)
LIFT = Access("audit-seal-lift", roles=frozenset({"regulator"}), refused_role=ONLY_REGULATORS)
MIN_REASON = 10


def _seal(row: Any) -> dict[str, Any]:
    return {
        "patient_id": str(row["patient_id"]),
        "institution": row["institution"],
        "readers": list(row["readers"]),
        "reason": row["reason"],
        "sealed_at": row["sealed_at"].isoformat(),
        "position": row["position"],
    }


def _granted(action: str) -> Decision:
    return Decision(True, [Reason("regulator.seals", action)])


class Seals:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def list(self, call: Call) -> Answer:
        rows = await self.ctx.records.active_seals()
        patients = sorted({str(r["patient_id"]) for r in rows})
        return Answer(
            json_response({"seals": [_seal(r) for r in rows]}, call.request_id),
            _granted(call.action),
            purpose="HOPERAT",
            disclosed=[f"Patient/{p}" for p in patients],
            extra={"patients": patients} if patients else None,
        )

    async def lift(self, call: Call) -> Answer:
        desk = self.ctx.regulator_desk
        if desk is None:
            raise Refused(503, "regulator.unavailable", "the regulator's desk is not set up")
        try:
            asked: UUID | None = UUID(str(call.request.path_params["pid"]))
        except ValueError:
            asked = None
        root = await self.ctx.records.root(asked) if asked else None
        members = await self.ctx.records.members(root) if root else []
        seals = await self.ctx.records.active_seals(members) if members else []
        if not seals:
            raise Refused(404, "seal.none", "no seal is in force on this patient", "not-found")
        try:
            body = await call.request.json()
        except ValueError:
            body = None
        reason = str(body.get("reason") or "").strip() if isinstance(body, dict) else ""
        if len(reason) < MIN_REASON:
            raise Refused(
                400,
                "seal.reason",
                f"give the reason for lifting the seal, at least {MIN_REASON} characters",
                "invalid",
                patient_id=root,
            )
        sent = await desk.lift_seals(members, reason=reason, now=self.ctx.clock())
        recorded = {"submission_id": sent.submission_id, "position": sent.position}
        if not sent.accepted:
            problem = sent.problems[0] if sent.problems else None
            raise Refused(
                503 if problem and problem.code.endswith(".unanswered") else 422,
                problem.code if problem else "seal.refused",
                "; ".join(p.message for p in sent.problems) or "refused",
                "invalid",
                patient_id=root,
                extra=recorded,
            )
        return Answer(
            json_response({"lifted": [_seal(s) for s in seals], **recorded}, call.request_id),
            _granted(call.action),
            patient_id=root,
            purpose="HOPERAT",
            disclosed=[f"Patient/{root}"],
            extra=recorded,
        )


def seal_routes(ctx: ApiContext) -> list[ApiRoute]:
    s = Seals(ctx)
    return [
        ApiRoute("GET", "/audit/seals", SEALS, s.list),
        ApiRoute("POST", "/audit/seals/{pid}/lift", LIFT, s.lift),
    ]
