"""The identity steward's routes (MPI 管理员): the queue of merges that wait for a decision,
and the decision itself.

A member institution's merge of two different people (two residents, or another member's
temporary identity into a resident) is held as a request (domain/merge_request.py). The
steward sees each request with what the two identities' institutions registered — the
identifiers and the demographics a person compares to tell whether two records are one
person — and approves or rejects it with a reason. Both are audited like every read, naming
the patients they touched.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from consent.decision import Decision, Reason
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused, json_response

ONLY_STEWARDS = "only the identity steward (mpi_steward) decides merges"
QUEUE = Access("mpi.merge-requests", roles=frozenset({"mpi_steward"}), refused_role=ONLY_STEWARDS)
DECIDE = Access("mpi.merge-decision", roles=frozenset({"mpi_steward"}), refused_role=ONLY_STEWARDS)
STATUSES = ("pending", "approved", "rejected", "undone")
DECISIONS = {"approve": "approved", "reject": "rejected", "undo": "undone"}
MIN_REASON = 10


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _about(patients: list[str], **extra: Any) -> dict[str, Any] | None:
    return {"patients": patients, **extra} if patients else (extra or None)


class Stewardship:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def queue(self, call: Call) -> Answer:
        status = call.request.query_params.get("status", "pending")
        if status not in STATUSES:
            raise Refused(400, "mpi.status", f"status is one of {', '.join(STATUSES)}", "invalid")
        rows = await self.ctx.merge_requests.requests(status)
        pids = sorted({p for r in rows for p in (r["survivor"], r["merged"])})
        who = await self.ctx.merge_requests.identities(pids)
        requests = [
            {
                "id": str(r["request_id"]),
                "reference": r["reference"],
                "requested_by": {"code": r["institution"], "name": r["institution_name"]},
                "requested_at": _iso(r["requested_at"]),
                "status": r["status"],
                "survivor": who.get(r["survivor"]),
                "merged": who.get(r["merged"]),
                "undone": None
                if r["undone_at"] is None
                else {
                    "steward": r["undone_by"],
                    "at": _iso(r["undone_at"]),
                    "reason": r["undo_reason"],
                },
                "decided": None
                if r["decided_at"] is None
                else {
                    "steward": r["steward"],
                    "at": _iso(r["decided_at"]),
                    "reason": r["reason"],
                },
            }
            for r in rows
        ]
        return Answer(
            json_response({"status": status, "requests": requests}, call.request_id),
            Decision(True, [Reason("mpi.steward", "identity stewardship")]),
            purpose="HOPERAT",
            disclosed=[f"MergeRequest/{r['id']}" for r in requests],
            extra=_about([str(p) for p in pids]),
        )

    async def decide(self, call: Call) -> Answer:
        steward = self.ctx.steward
        if steward is None:
            raise Refused(
                503, "steward.unavailable", "the steward's desk is not set up", "transient"
            )
        try:
            rid = UUID(str(call.request.path_params["rid"]))
        except ValueError:
            raise Refused(
                404, "merge.request_unknown", "no merge request has this id", "not-found"
            ) from None
        try:
            body = await call.request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("decision") not in DECISIONS:
            raise Refused(
                400,
                "merge.decision",
                'send {"decision": "approve" | "reject" | "undo", "reason": "..."}',
                "invalid",
            )
        reason = str(body.get("reason") or "").strip()
        if len(reason) < MIN_REASON:
            raise Refused(
                400,
                "merge.reason",
                f"give the reason, at least {MIN_REASON} characters (what was checked)",
                "invalid",
            )
        decided = await steward.decide(
            rid, body["decision"], steward=call.who.person, reason=reason, now=self.ctx.clock()
        )
        row, sent = decided.request, decided.sent
        patients = [str(row["survivor"]), str(row["merged"])] if row is not None else []
        recorded = {"submission_id": sent.submission_id, "position": sent.position}
        if row is None:
            raise Refused(404, "merge.request_unknown", "no merge request has this id", "not-found")
        if not sent.accepted:
            code = sent.problems[0].code if sent.problems else "merge.refused"
            status = (
                409
                if code in ("merge.request_not_pending", "merge.request_not_approved")
                else 503
                if code == "steward.unanswered"
                else 422
            )
            raise Refused(
                status,
                code,
                "; ".join(p.message for p in sent.problems) or "refused",
                "conflict" if status == 409 else "invalid",
                decision=Decision(False, [Reason(p.code, p.message) for p in sent.problems]),
                extra=_about(patients, **recorded),
            )
        return Answer(
            json_response(
                {
                    "id": str(rid),
                    "status": DECISIONS[body["decision"]],
                    **recorded,
                },
                call.request_id,
            ),
            Decision(True, [Reason(f"mpi.{body['decision']}", "decided by the identity steward")]),
            purpose="HOPERAT",
            disclosed=[f"MergeRequest/{rid}"],
            extra=_about(patients, **recorded),
        )


def mpi_routes(ctx: ApiContext) -> list[ApiRoute]:
    s = Stewardship(ctx)
    return [
        ApiRoute("GET", "/mpi/merge-requests", QUEUE, s.queue),
        ApiRoute("POST", "/mpi/merge-requests/{rid}", DECIDE, s.decide),
    ]
