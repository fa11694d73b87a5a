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
from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.responses import Response

from audit.disclosure import check_rebuilt
from audit.search import SearchError, parse_search
from consent.decision import Decision, Reason, own_audit_only
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.fhir import audit_event, bundle
from exchange.api.redecide import rebuild_disclosed, recorded_summary, redecide, summary
from exchange.api.responses import Refused, csv_cell, fhir_response, json_response
from projections.render import dumps

CSV_COLUMNS = (
    "seq",
    "recorded_at",
    "action",
    "decision",
    "person",
    "role",
    "institution",
    "patient_id",
    "purpose",
    "legal_basis",
    "consent_id",
    "break_glass",
    "reasons",
    "disclosed",
    "request_id",
    "source",
)
ONLY_REGULATORS = "only a regulator reads the audit trail"


def _regulator(action: str) -> Access:
    return Access(action, roles=frozenset({"regulator"}), refused_role=ONLY_REGULATORS)


AUDIT_READ = Access(
    "audit-read", roles=frozenset({"regulator", "patient"}), refused_role=ONLY_REGULATORS
)
EXPORT, BREACH, QUEUE, REVIEW = (
    _regulator("audit-export"),
    _regulator("breach-scope"),
    _regulator("break-glass.queue"),
    _regulator("break-glass.review"),
)
REDECIDE, DISCLOSED, ALERTS = (
    _regulator("audit-redecide"),
    _regulator("audit-disclosed"),
    _regulator("audit-alerts"),
)
HEAD, PROOF = _regulator("audit-head"), _regulator("audit-proof")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _invalid(code: str, message: str) -> Refused:
    return Refused(400, code, message, "invalid")


def _granted(call: Call, response: Response, disclosed: list[str], **extra: Any) -> Answer:
    """A regulator's answer: audit data read for oversight (HOPERAT)."""
    return Answer(
        response,
        Decision(True, [Reason("regulator.audit", call.action)]),
        purpose="HOPERAT",
        disclosed=disclosed,
        extra=extra or None,
    )


class Regulator:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _query(self, call: Call, *, with_paging: bool = True) -> Any:
        params: dict[str, list[str]] = defaultdict(list)
        for key, value in call.request.query_params.multi_items():
            params[key].append(value)
        return parse_search(params, with_paging=with_paging)

    async def audit_events(self, call: Call) -> Answer:
        """AuditEvent search: a regulator's; or a patient's, about themself only (PIPL Art. 45:
        who accessed my record)."""
        ident = call.who
        asked = call.request.query_params.get("patient", "").removeprefix("Patient/")
        refusal = own_audit_only(ident.role, ident.person, asked)
        if refusal is not None:
            raise Refused.because(403, refusal)
        own: list[UUID] = []
        try:
            query = self._query(call)
            if ident.role == "patient":  # only rows about this patient, whatever else is asked
                root = await self.ctx.records.root(UUID(ident.person))
                members = await self.ctx.records.members(root) if root else []
                own = [UUID(ident.person), *members]
                query.add(
                    "seq IN (SELECT seq FROM audit_log WHERE patient_id = ANY({0}) UNION ALL "
                    "SELECT seq FROM audit_patients WHERE patient_id = ANY({0}))",
                    own,
                )
        except (SearchError, ValueError) as exc:
            code = exc.code if isinstance(exc, SearchError) else "search.invalid"
            raise _invalid(code, str(exc)) from None
        total, rows = await self.ctx.audit.search(query)
        # A patient is shown themself among the patients a read touched, never the others.
        shown = {str(p) for p in own} if ident.role == "patient" else None
        entries = [
            (
                f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'audit/{seq}')}",
                dumps(audit_event(seq, record, shown)),
            )
            for seq, record in rows
        ]
        return _granted(
            call,
            fhir_response(
                bundle(entries, now=self.ctx.clock(), extra={"total": total}),
                request_id=call.request_id,
            ),
            [f"AuditEvent/{seq}" for seq, _ in rows],
            query=dict(call.request.query_params),
        )

    async def export_csv(self, call: Call) -> Answer:
        try:
            query = self._query(call, with_paging=False)
        except SearchError as exc:
            raise _invalid(exc.code, str(exc)) from None
        query.count = 1_000_000
        _, rows = await self.ctx.audit.search(query)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for seq, r in rows:
            writer.writerow(
                csv_cell(v)
                for v in [
                    seq,
                    r.get("recorded_at"),
                    r.get("action"),
                    r.get("decision"),
                    r.get("person"),
                    r.get("role"),
                    r.get("institution"),
                    r.get("patient_id"),
                    r.get("purpose"),
                    r.get("legal_basis"),
                    r.get("consent_id"),
                    r.get("break_glass"),
                    ";".join(x["code"] for x in r.get("reasons", [])),
                    r.get("disclosed_count", len(r.get("disclosed", []))),
                    r.get("request_id"),
                    r.get("source"),
                ]
            )
        return _granted(
            call,
            Response(
                out.getvalue(),
                media_type="text/csv; charset=utf-8",
                headers={
                    "X-Request-Id": call.request_id,
                    "Content-Disposition": 'attachment; filename="audit.csv"',
                },
            ),
            [f"{len(rows)} records"],
            query=dict(call.request.query_params),
        )

    async def breach_scope(self, call: Call) -> Answer:
        """Every patient and category a person (or one token) was given in a window."""
        p = call.request.query_params
        try:
            if not (p.get("agent") or p.get("token")):
                raise ValueError("name the agent=<person> or token=<token id>")
            start = datetime.fromisoformat(p["start"])
            end = datetime.fromisoformat(p["end"])
            if start.tzinfo is None or end.tzinfo is None or end <= start:
                raise ValueError("start and end need timezone offsets, and end after start")
        except (KeyError, ValueError) as exc:
            message = (
                str(exc)
                if isinstance(exc, ValueError) and str(exc)
                else "give start=<instant> and end=<instant> with timezone offsets"
            )
            raise _invalid("breach.params", message) from None
        records = await self.ctx.audit.records_of(
            person=p.get("agent"), token_id=p.get("token"), start=start, end=end
        )
        patients: dict[str, dict[str, Any]] = {}
        for r in records:
            if r.get("decision") != "permit" or not (
                r.get("disclosed") or r.get("disclosed_count")
            ):
                continue
            # One patient's record, or a read that touched several (an inbox, a search).
            for pid in [r["patient_id"]] if r.get("patient_id") else r.get("patients") or []:
                entry = patients.setdefault(
                    pid,
                    {
                        "patient_id": pid,
                        "reads": 0,
                        "categories": set(),
                        "first": r["recorded_at"],
                        "last": r["recorded_at"],
                        "break_glass": False,
                    },
                )
                entry["reads"] += 1
                entry["categories"] |= set(r.get("categories") or [])
                entry.setdefault("resource_types", set()).update(
                    r.get("resource_types") or [d.split("/")[0] for d in r.get("disclosed", [])]
                )
                entry["last"] = r["recorded_at"]
                entry["break_glass"] |= bool(r.get("break_glass"))
        result = [
            {
                **v,
                "categories": sorted(v["categories"]),
                "resource_types": sorted(v.get("resource_types", ())),
            }
            for v in patients.values()
        ]
        return _granted(
            call,
            json_response(
                {
                    "agent": p.get("agent"),
                    "token": p.get("token"),
                    "start": p["start"],
                    "end": p["end"],
                    "records": len(records),
                    "patients": result,
                },
                call.request_id,
            ),
            [f"{len(records)} records"],
            agent=p.get("agent"),
            token=p.get("token"),
            start=p["start"],
            end=p["end"],
        )

    async def review_queue(self, call: Call) -> Answer:
        rows = await self.ctx.audit.unreviewed_break_glass()
        return _granted(
            call,
            json_response(
                {
                    "pending": [
                        {
                            "seq": seq,
                            "recorded_at": r["recorded_at"],
                            "person": r.get("person"),
                            "institution": r.get("institution"),
                            "patient_id": r.get("patient_id"),
                            "reason_code": r.get("reason_code"),
                            "reason": r.get("reason_text"),
                            "expires_at": r.get("expires_at"),
                        }
                        for seq, r in rows
                    ]
                },
                call.request_id,
            ),
            [f"AuditEvent/{seq}" for seq, _ in rows],
        )

    async def review(self, call: Call) -> Answer:
        try:
            seq = int(call.request.path_params["seq"])
            body = await call.request.json()
            outcome, comment = body.get("outcome"), body.get("comment", "")
            if outcome not in ("justified", "unjustified") or not isinstance(comment, str):
                raise ValueError
        except (ValueError, AttributeError):
            raise _invalid(
                "review.invalid", 'send {"outcome": "justified" | "unjustified", "comment": "…"}'
            ) from None
        reviewed = await self.ctx.audit.record(seq)
        if not reviewed or reviewed.get("action") != "break-glass":
            raise Refused(
                404, "review.not_found", "no break-glass grant is recorded at that seq", "not-found"
            )
        return Answer(
            json_response({"reviewed_seq": seq, "outcome": outcome}, call.request_id),
            Decision(True, [Reason("review." + outcome, comment[:500])]),
            purpose="HOPERAT",
            extra={"reviewed_seq": seq, "outcome": outcome},
        )

    async def redecide(self, call: Call) -> Answer:
        """``/audit/redecide?seq=``: decide a recorded read again from the ledger as it stood
        then; the answer shows the recorded and the recomputed decision side by side."""
        raw = call.request.query_params.get("seq", "")
        record = await self.ctx.audit.record(int(raw)) if raw.isdigit() else None
        again = (
            await redecide(record, self.ctx.consent, self.ctx.records, self.ctx.policy)
            if record
            else None
        )
        if record is None or again is None:
            raise Refused(
                404,
                "redecide.not_a_read",
                "give seq= of a recorded read of a patient's record",
                "not-found",
            )
        recorded, recomputed = recorded_summary(record), summary(again)
        # Decided again under today's policy: say whether it is the one the read was under.
        policy_same = record.get("policy") == self.ctx.policy.fingerprint()
        return _granted(
            call,
            json_response(
                {
                    "seq": int(raw),
                    "recorded": recorded,
                    "recomputed": recomputed,
                    "same": recorded == recomputed,
                    "policy_same": policy_same,
                },
                call.request_id,
            ),
            [f"AuditEvent/{raw}"],
        )

    async def disclosed(self, call: Call) -> Answer:
        """``/audit/disclosed?seq=``: the resources a recorded read disclosed, rebuilt from the
        ledger as of its position under its decision, checked against the record's digest with
        the hash its field names (a digest naming another hash than the log's: ``finding``)."""
        raw = call.request.query_params.get("seq", "")
        record = await self.ctx.audit.record(int(raw)) if raw.isdigit() else None
        if (
            not record
            or record.get("action") != "read"
            or record.get("decision") != "permit"
            or "as_of_position" not in record
        ):
            raise Refused(
                404,
                "disclosed.not_a_read",
                "give seq= of a permitted read of a patient's record",
                "not-found",
            )
        rebuilt = await rebuild_disclosed(record, self.ctx.records)
        return _granted(
            call,
            json_response(
                {
                    "seq": int(raw),
                    "disclosed": rebuilt,
                    "count": len(rebuilt),
                    **check_rebuilt(record, rebuilt, self.ctx.hash_name),
                },
                call.request_id,
            ),
            [f"AuditEvent/{raw}"],
        )

    async def alerts(self, call: Call) -> Answer:
        """Records that raised an alert: a sealed record read by someone it does not name,
        every break-glass grant, a person refused break-glass past the rate."""
        rows = await self.ctx.audit.alerts()
        return _granted(
            call,
            json_response(
                {
                    "alerts": [
                        {
                            "seq": seq,
                            "recorded_at": r["recorded_at"],
                            "alert": r.get("alert"),
                            "person": r.get("person"),
                            "institution": r.get("institution"),
                            "patient_id": r.get("patient_id"),
                            "reasons": r.get("reasons"),
                        }
                        for seq, r in rows
                    ]
                },
                call.request_id,
            ),
            [f"AuditEvent/{seq}" for seq, _ in rows],
        )

    # Signed heads and proofs ----------------------------------------------------------------

    async def head(self, call: Call) -> Answer:
        head = await self.ctx.audit.last_head()
        if head is None:
            raise Refused(404, "audit.no_head", "no tree head has been signed yet", "not-found")
        return _granted(
            call,
            json_response(
                {
                    "size": head["size"],
                    "root": _b64(bytes(head["root"])),
                    "checkpoint": head["note"],
                    "signed_at": head["signed_at"].isoformat(),
                },
                call.request_id,
            ),
            [f"head/{head['size']}"],
        )

    async def _sizes(self, call: Call, *names: str) -> list[int]:
        head = await self.ctx.audit.last_head()
        signed = head["size"] if head else 0
        try:
            values = [
                int(call.request.query_params.get(n, signed if n in ("size", "second") else ""))
                for n in names
            ]
        except ValueError:
            raise _invalid("proof.params", f"give {', '.join(names)} as whole numbers") from None
        if any(v > signed for v in values):
            raise _invalid(
                "proof.beyond_head", f"proofs are given up to the signed head's size ({signed})"
            )
        return values

    async def inclusion(self, call: Call) -> Answer:
        seq, size = await self._sizes(call, "seq", "size")
        if not 0 <= seq < size:
            raise _invalid("proof.params", "seq must be a record inside the tree: 0 <= seq < size")
        leaf, proof = await self.ctx.audit.inclusion(seq, size)
        record = await self.ctx.audit.record(seq)
        return _granted(
            call,
            json_response(
                {
                    "seq": seq,
                    "size": size,
                    "leaf_hash": _b64(leaf),
                    "proof": [_b64(h) for h in proof],
                    "record": json.dumps(
                        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                    ),
                },
                call.request_id,
            ),
            [f"AuditEvent/{seq}"],
        )

    async def consistency(self, call: Call) -> Answer:
        first, second = await self._sizes(call, "first", "second")
        if not 0 < first <= second:
            raise _invalid("proof.params", "need 0 < first <= second")
        proof = await self.ctx.audit.consistency(first, second)
        return _granted(
            call,
            json_response(
                {"first": first, "second": second, "proof": [_b64(h) for h in proof]},
                call.request_id,
            ),
            [],
        )


def regulator_routes(ctx: ApiContext) -> list[ApiRoute]:
    r = Regulator(ctx)
    return [
        ApiRoute("GET", "/fhir/AuditEvent", AUDIT_READ, r.audit_events),
        ApiRoute("GET", "/audit/export.csv", EXPORT, r.export_csv),
        ApiRoute("GET", "/audit/breach-scope", BREACH, r.breach_scope),
        ApiRoute("GET", "/audit/break-glass-review", QUEUE, r.review_queue),
        ApiRoute("POST", "/audit/break-glass-review/{seq:int}", REVIEW, r.review),
        ApiRoute("GET", "/audit/redecide", REDECIDE, r.redecide),
        ApiRoute("GET", "/audit/alerts", ALERTS, r.alerts),
        ApiRoute("GET", "/audit/disclosed", DISCLOSED, r.disclosed),
        ApiRoute("GET", "/audit/head", HEAD, r.head),
        ApiRoute("GET", "/audit/proof/inclusion", PROOF, r.inclusion),
        ApiRoute("GET", "/audit/proof/consistency", PROOF, r.consistency),
    ]
