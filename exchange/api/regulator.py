"""The regulator's side of the read API: AuditEvent search (IHE BALP shape), CSV export,
breach scope, the break-glass review queue, signed tree heads and RFC 9162 proofs.

Regulators read audit data and never clinical data; every regulator request is itself audited.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit.search import SearchError, parse_search
from consent.decision import Decision, Reason
from exchange.api.fhir import audit_event, bundle
from exchange.api.gate import Exchange
from exchange.api.redecide import rebuild_disclosed, recorded_summary, redecide, summary
from exchange.api.responses import Handler, Refused, disclosed_digest, fhir_response, json_response
from exchange.auth.tokens import Identity
from projections.render import dumps

CSV_COLUMNS = ("seq", "recorded_at", "action", "decision", "person", "role", "institution",
               "patient_id", "purpose", "legal_basis", "consent_id", "break_glass", "reasons",
               "disclosed", "request_id", "source")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Regulator:
    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    async def _regulator(self, request: Request, request_id: str, action: str) -> Identity:
        ident = await self.ex.authenticate(request, request_id, action)
        if ident.role != "regulator":
            raise await self.ex.deny(request, request_id, action, ident, 403, Reason(
                "role.not_permitted", "only a regulator reads the audit trail"))
        return ident

    async def _granted(self, request: Request, request_id: str, action: str, ident: Identity,
                       disclosed: list[str], **extra: Any) -> None:
        await self.ex.record(request, request_id, action=action, ident=ident, purpose="HOPERAT",
                             decision=Decision(True, [Reason("regulator.audit", action)]),
                             disclosed=disclosed, extra=extra or None)

    def _query(self, request: Request, *, with_paging: bool = True) -> Any:
        params: dict[str, list[str]] = defaultdict(list)
        for key, value in request.query_params.multi_items():
            params[key].append(value)
        return parse_search(params, with_paging=with_paging)

    async def audit_events(self, request: Request, request_id: str) -> Response:
        """AuditEvent search: a regulator's; or a patient's, about themself only (PIPL Art. 45:
        who accessed my record)."""
        ident = await self.ex.authenticate(request, request_id, "audit-read")
        if ident.role == "patient":
            asked = request.query_params.get("patient", "").removeprefix("Patient/")
            if asked and asked != ident.person:
                raise await self.ex.deny(request, request_id, "audit-read", ident, 403, Reason(
                    "role.not_own_record", "a patient reads the audit of their own record"))
        elif ident.role != "regulator":
            raise await self.ex.deny(request, request_id, "audit-read", ident, 403, Reason(
                "role.not_permitted", "only a regulator reads the audit trail"))
        try:
            query = self._query(request)
            if ident.role == "patient":  # only rows about this patient, whatever else is asked
                root = await self.ex.ctx.records.root(UUID(ident.person))
                members = await self.ex.ctx.records.members(root) if root else []
                query.add("patient_id = ANY({})", [UUID(ident.person), *members])
        except (SearchError, ValueError) as exc:
            code = exc.code if isinstance(exc, SearchError) else "search.invalid"
            raise await self.ex.deny(request, request_id, "audit-read", ident, 400,
                                     Reason(code, str(exc)), issue_type="invalid") from None
        total, rows = await self.ex.ctx.audit.search(query)
        await self._granted(request, request_id, "audit-read", ident,
                            [f"AuditEvent/{seq}" for seq, _ in rows],
                            query=dict(request.query_params))
        entries = [(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'audit/{seq}')}",
                    dumps(audit_event(seq, record))) for seq, record in rows]
        return fhir_response(bundle(entries, now=self.ex.ctx.clock(), extra={"total": total}),
                             request_id=request_id)

    async def export_csv(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "audit-export")
        try:
            query = self._query(request, with_paging=False)
        except SearchError as exc:
            raise await self.ex.deny(request, request_id, "audit-export", ident, 400,
                                     Reason(exc.code, str(exc)), issue_type="invalid") from None
        query.count = 1_000_000
        _, rows = await self.ex.ctx.audit.search(query)
        await self._granted(request, request_id, "audit-export", ident, [f"{len(rows)} records"],
                            query=dict(request.query_params))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for seq, r in rows:
            writer.writerow([seq, r.get("recorded_at"), r.get("action"), r.get("decision"),
                             r.get("person"), r.get("role"), r.get("institution"),
                             r.get("patient_id"), r.get("purpose"), r.get("legal_basis"),
                             r.get("consent_id"), r.get("break_glass"),
                             ";".join(x["code"] for x in r.get("reasons", [])),
                             r.get("disclosed_count", len(r.get("disclosed", []))),
                             r.get("request_id"), r.get("source")])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"X-Request-Id": request_id,
                                 "Content-Disposition": 'attachment; filename="audit.csv"'})

    async def breach_scope(self, request: Request, request_id: str) -> Response:
        """Every patient and category a person (or one token) was given in a window."""
        ident = await self._regulator(request, request_id, "breach-scope")
        p = request.query_params
        try:
            if not (p.get("agent") or p.get("token")):
                raise ValueError("name the agent=<person> or token=<token id>")
            start = datetime.fromisoformat(p["start"])
            end = datetime.fromisoformat(p["end"])
            if start.tzinfo is None or end.tzinfo is None or end <= start:
                raise ValueError("start and end need timezone offsets, and end after start")
        except (KeyError, ValueError) as exc:
            message = str(exc) if isinstance(exc, ValueError) and str(exc) else \
                "give start=<instant> and end=<instant> with timezone offsets"
            raise await self.ex.deny(request, request_id, "breach-scope", ident, 400, Reason(
                "breach.params", message), issue_type="invalid") from None
        records = await self.ex.ctx.audit.records_of(person=p.get("agent"),
                                                     token_id=p.get("token"), start=start, end=end)
        patients: dict[str, dict[str, Any]] = {}
        for r in records:
            if r.get("decision") != "permit" or not r.get("patient_id") or not (
                    r.get("disclosed") or r.get("disclosed_count")):
                continue
            entry = patients.setdefault(r["patient_id"], {
                "patient_id": r["patient_id"], "reads": 0, "categories": set(),
                "first": r["recorded_at"], "last": r["recorded_at"], "break_glass": False})
            entry["reads"] += 1
            entry["categories"] |= set(r.get("categories") or [])
            entry.setdefault("resource_types", set()).update(r.get("resource_types") or [
                d.split("/")[0] for d in r.get("disclosed", [])])
            entry["last"] = r["recorded_at"]
            entry["break_glass"] |= bool(r.get("break_glass"))
        result = [{**v, "categories": sorted(v["categories"]),
                   "resource_types": sorted(v.get("resource_types", ()))}
                  for v in patients.values()]
        await self._granted(request, request_id, "breach-scope", ident,
                            [f"{len(records)} records"], agent=p.get("agent"),
                            token=p.get("token"), start=p["start"], end=p["end"])
        return json_response({"agent": p.get("agent"), "token": p.get("token"),
                              "start": p["start"], "end": p["end"], "records": len(records),
                              "patients": result}, request_id)

    async def review_queue(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "break-glass.queue")
        rows = await self.ex.ctx.audit.unreviewed_break_glass()
        await self._granted(request, request_id, "break-glass.queue", ident,
                            [f"AuditEvent/{seq}" for seq, _ in rows])
        return json_response({"pending": [
            {"seq": seq, "recorded_at": r["recorded_at"], "person": r.get("person"),
             "institution": r.get("institution"), "patient_id": r.get("patient_id"),
             "reason_code": r.get("reason_code"), "reason": r.get("reason_text"),
             "expires_at": r.get("expires_at")} for seq, r in rows]}, request_id)

    async def review(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "break-glass.review")
        try:
            seq = int(request.path_params["seq"])
            body = await request.json()
            outcome, comment = body.get("outcome"), body.get("comment", "")
            if outcome not in ("justified", "unjustified") or not isinstance(comment, str):
                raise ValueError
        except (ValueError, AttributeError):
            raise await self.ex.deny(request, request_id, "break-glass.review", ident, 400, Reason(
                "review.invalid", 'send {"outcome": "justified" | "unjustified", "comment": "…"}'),
                issue_type="invalid") from None
        reviewed = await self.ex.ctx.audit.record(seq)
        if not reviewed or reviewed.get("action") != "break-glass":
            raise await self.ex.deny(request, request_id, "break-glass.review", ident, 404, Reason(
                "review.not_found", "no break-glass grant is recorded at that seq"),
                issue_type="not-found")
        await self.ex.record(request, request_id, action="break-glass.review", ident=ident,
                             patient_id=None, purpose="HOPERAT",
                             decision=Decision(True, [Reason("review." + outcome, comment[:500])]),
                             extra={"reviewed_seq": seq, "outcome": outcome})
        return json_response({"reviewed_seq": seq, "outcome": outcome}, request_id)

    async def redecide(self, request: Request, request_id: str) -> Response:
        """``/audit/redecide?seq=``: decide a recorded read again from the ledger as it stood
        then; the answer shows the recorded and the recomputed decision side by side."""
        ident = await self._regulator(request, request_id, "audit-redecide")
        raw = request.query_params.get("seq", "")
        record = await self.ex.ctx.audit.record(int(raw)) if raw.isdigit() else None
        again = await redecide(record, self.ex.ctx.consent, self.ex.ctx.records,
                               self.ex.ctx.policy) if record else None
        if record is None or again is None:
            raise await self.ex.deny(request, request_id, "audit-redecide", ident, 404, Reason(
                "redecide.not_a_read", "give seq= of a recorded read of a patient's record"),
                issue_type="not-found")
        await self._granted(request, request_id, "audit-redecide", ident, [f"AuditEvent/{raw}"])
        recorded, recomputed = recorded_summary(record), summary(again)
        # Decided again under today's policy: say whether it is the one the read was under.
        policy_same = record.get("policy") == self.ex.ctx.policy.fingerprint()
        return json_response({"seq": int(raw), "recorded": recorded, "recomputed": recomputed,
                              "same": recorded == recomputed, "policy_same": policy_same},
                             request_id)

    async def disclosed(self, request: Request, request_id: str) -> Response:
        """``/audit/disclosed?seq=``: the resources a recorded read disclosed, rebuilt from the
        ledger as of its position under its decision, checked against the record's digest."""
        ident = await self._regulator(request, request_id, "audit-disclosed")
        raw = request.query_params.get("seq", "")
        record = await self.ex.ctx.audit.record(int(raw)) if raw.isdigit() else None
        if not record or record.get("action") != "read" or record.get("decision") != "permit" \
                or "as_of_position" not in record:
            raise await self.ex.deny(request, request_id, "audit-disclosed", ident, 404, Reason(
                "disclosed.not_a_read", "give seq= of a permitted read of a patient's record"),
                issue_type="not-found")
        rebuilt = await rebuild_disclosed(record, self.ex.ctx.records)
        listed = record.get("disclosed") or []
        if record.get("disclosed_sha256"):
            same = disclosed_digest(rebuilt) == record["disclosed_sha256"]
        else:
            same = sorted(rebuilt) == sorted(listed)
        await self._granted(request, request_id, "audit-disclosed", ident, [f"AuditEvent/{raw}"])
        return json_response({"seq": int(raw), "disclosed": rebuilt, "count": len(rebuilt),
                              "matches_record": same}, request_id)

    async def alerts(self, request: Request, request_id: str) -> Response:
        """Refused reads that raised an alert (a sealed record read by someone not named)."""
        ident = await self._regulator(request, request_id, "audit-alerts")
        rows = await self.ex.ctx.audit.alerts()
        await self._granted(request, request_id, "audit-alerts", ident,
                            [f"AuditEvent/{seq}" for seq, _ in rows])
        return json_response({"alerts": [
            {"seq": seq, "recorded_at": r["recorded_at"], "alert": r.get("alert"),
             "person": r.get("person"), "institution": r.get("institution"),
             "patient_id": r.get("patient_id"), "reasons": r.get("reasons")}
            for seq, r in rows]}, request_id)

    # Signed heads and proofs ----------------------------------------------------------------

    async def head(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "audit-head")
        head = await self.ex.ctx.audit.last_head()
        if head is None:
            raise Refused(404, "audit.no_head", "no tree head has been signed yet", "not-found")
        await self._granted(request, request_id, "audit-head", ident, [f"head/{head['size']}"])
        return json_response({"size": head["size"], "root": _b64(bytes(head["root"])),
                              "checkpoint": head["note"],
                              "signed_at": head["signed_at"].isoformat()}, request_id)

    async def _sizes(self, request: Request, request_id: str, ident: Identity, action: str,
                     *names: str) -> list[int]:
        head = await self.ex.ctx.audit.last_head()
        signed = head["size"] if head else 0
        try:
            values = [int(request.query_params.get(n, signed if n in ("size", "second") else ""))
                      for n in names]
        except ValueError:
            raise await self.ex.deny(request, request_id, action, ident, 400, Reason(
                "proof.params", f"give {', '.join(names)} as whole numbers"),
                issue_type="invalid") from None
        if any(v > signed for v in values):
            raise await self.ex.deny(request, request_id, action, ident, 400, Reason(
                "proof.beyond_head", f"proofs are given up to the signed head's size ({signed})"),
                issue_type="invalid")
        return values

    async def inclusion(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "audit-proof")
        seq, size = await self._sizes(request, request_id, ident, "audit-proof", "seq", "size")
        if not 0 <= seq < size:
            raise await self.ex.deny(request, request_id, "audit-proof", ident, 400, Reason(
                "proof.params", "seq must be a record inside the tree: 0 <= seq < size"),
                issue_type="invalid")
        leaf, proof = await self.ex.ctx.audit.inclusion(seq, size)
        record = await self.ex.ctx.audit.record(seq)
        await self._granted(request, request_id, "audit-proof", ident, [f"AuditEvent/{seq}"])
        return json_response({"seq": seq, "size": size, "leaf_hash": _b64(leaf),
                              "proof": [_b64(h) for h in proof],
                              "record": json.dumps(record, sort_keys=True, separators=(",", ":"),
                                                   ensure_ascii=False)}, request_id)

    async def consistency(self, request: Request, request_id: str) -> Response:
        ident = await self._regulator(request, request_id, "audit-proof")
        first, second = await self._sizes(request, request_id, ident, "audit-proof",
                                          "first", "second")
        if not 0 < first <= second:
            raise await self.ex.deny(request, request_id, "audit-proof", ident, 400, Reason(
                "proof.params", "need 0 < first <= second"), issue_type="invalid")
        proof = await self.ex.ctx.audit.consistency(first, second)
        await self._granted(request, request_id, "audit-proof", ident, [])
        return json_response({"first": first, "second": second,
                              "proof": [_b64(h) for h in proof]}, request_id)


def regulator_routes(ex: Exchange, wrap: Callable[[Handler], Any]) -> list[Route]:
    reg = Regulator(ex)
    return [
        Route("/fhir/AuditEvent", wrap(reg.audit_events)),
        Route("/audit/export.csv", wrap(reg.export_csv)),
        Route("/audit/breach-scope", wrap(reg.breach_scope)),
        Route("/audit/break-glass-review", wrap(reg.review_queue)),
        Route("/audit/break-glass-review/{seq:int}", wrap(reg.review), methods=["POST"]),
        Route("/audit/redecide", wrap(reg.redecide)),
        Route("/audit/alerts", wrap(reg.alerts)),
        Route("/audit/disclosed", wrap(reg.disclosed)),
        Route("/audit/head", wrap(reg.head)),
        Route("/audit/proof/inclusion", wrap(reg.inclusion)),
        Route("/audit/proof/consistency", wrap(reg.consistency)),
    ]
