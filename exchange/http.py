"""The read API (Starlette): authenticate → consent decision → query → audit append → respond.

Every request that touches a patient appends its decision (permit or deny) to the audit log
before anything is sent; if that append fails, the request fails and no data leaves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit.postgres import AuditStore, AuditWriteError
from audit.writer import AuditWriter
from exchange.audit_log import HeadSigner
from consent.decision import (
    DEFAULT_POLICY,
    AccessPolicy,
    Decision,
    InvalidBreakGlass,
    Reason,
    check_break_glass,
)
from consent.postgres import ConsentState
from exchange.fhir import (
    FHIR_JSON,
    RESOURCE_TYPES,
    bundle,
    capability_statement,
    operation_outcome,
)
from exchange.auth import Authenticator
from exchange.tokens import Identity, TokenError
from projections.postgres import PatientRecordReader
from projections.referral_reader import ReferralReader
from projections.render import dumps, render_patient

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass
class ApiContext:
    tokens: Authenticator
    audit_writer: AuditWriter  # group commit: what every request appends through
    heads: HeadSigner
    consent: ConsentState
    records: PatientRecordReader
    referrals: ReferralReader
    policy: AccessPolicy = DEFAULT_POLICY
    portal: Any = None  # exchange.portal.Portal: consents a patient gives over HTTP
    clock: Clock = lambda: datetime.now(UTC)  # noqa: E731

    @property
    def audit(self) -> AuditStore:
        return self.audit_writer.store


class Refused(Exception):
    """An answer other than 200: status, stable code, message, FHIR issue type."""

    def __init__(self, status: int, code: str, message: str, issue_type: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.issue_type = status, code, message, issue_type


LISTED = 20  # up to this many disclosed resources are listed; beyond, counted and digested


def disclosure(disclosed: list[str]) -> dict[str, Any]:
    """What an audit record says was disclosed. A handful of resources are listed; a whole
    record (hundreds) is counted, typed and digested (SHA-256 of the sorted "Type/id" lines):
    the list itself follows from the ledger as of the record's position and decision
    (``/audit/disclosed?seq=`` rebuilds and checks it), and a record under ~2 kB costs the
    database a fraction of one carrying kilobytes of ids on every read."""
    types = sorted({d.split("/")[0] for d in disclosed if "/" in d})
    if len(disclosed) <= LISTED:
        return {"disclosed": disclosed, "resource_types": types,
                "disclosed_count": len(disclosed)}
    return {"disclosed": [], "disclosed_count": len(disclosed), "resource_types": types,
            "disclosed_sha256": disclosed_digest(disclosed)}


def disclosed_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def fhir_response(body: bytes | dict[str, Any], status: int = 200, request_id: str = "") -> Response:
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return Response(content, status, media_type=FHIR_JSON, headers={"X-Request-Id": request_id})


class Exchange:
    """The route handlers, sharing one context."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # The gate -----------------------------------------------------------------------------------

    async def record(self, request: Request, request_id: str, *, action: str,
                     ident: Identity | None, patient_id: UUID | None = None,
                     purpose: str | None = None, decision: Decision | None = None,
                     reasons: list[Reason] | None = None, disclosed: list[str] | None = None,
                     extra: dict[str, Any] | None = None,
                     categories: list[str] | tuple[str, ...] | None = None,
                     disclosure_summary: dict[str, Any] | None = None) -> None:
        reasons = reasons if reasons is not None else (decision.reasons if decision else [])
        record = {
            "action": action, "request_id": request_id, "route": request.url.path,
            "person": ident.person if ident else None, "role": ident.role if ident else None,
            "institution": ident.institution if ident else None,
            "token_id": ident.token_id if ident else None,
            "patient_id": str(patient_id) if patient_id else None, "purpose": purpose,
            "decision": "permit" if decision and decision.permit else "deny",
            "reasons": [{"code": r.code, "message": r.message} for r in reasons],
            "legal_basis": decision.legal_basis if decision else None,
            "consent_id": str(decision.consent_id) if decision and decision.consent_id else None,
            "break_glass": bool(decision and decision.break_glass),
            "care_basis": decision.care_basis if decision else None,
            "obligations": decision.obligations if decision else [],
            **(disclosure_summary or disclosure(disclosed or [])),
            # The data categories the response held (breach scope: what was touched), and
            # those the decision let through.
            "categories": sorted(categories or []),
            "permitted": list(decision.categories) if decision and decision.permit else [],
            "alert": decision.alert if decision else None,
            "source": request.client.host if request.client else None,
            **(extra or {}),
        }
        try:
            await self.ctx.audit_writer.append(record, self.ctx.clock())
        except AuditWriteError:
            log.exception("audit append failed; refusing request %s", request_id)
            raise Refused(503, "audit.unavailable", "the audit log could not record this "
                          "request, so no data is sent; try again shortly", "exception") from None

    async def authenticate(self, request: Request, request_id: str, action: str) -> Identity:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise TokenError("send Authorization: Bearer <token> (issue one with hie token)")
            ident = await self.ctx.tokens.authenticate(token.strip(), now=self.ctx.clock())
            if ident.role == "patient" and not _is_uuid(ident.person):
                raise TokenError("a patient token names the patient by regional id")
            return ident
        except TokenError as exc:
            reason = Reason(exc.code, str(exc))
            await self.record(request, request_id, action=f"{action}.authenticate", ident=None,
                              reasons=[reason])
            if exc.code == "token.revocation_unavailable":  # ours, not the caller's fault
                raise Refused(503, exc.code, str(exc), "transient") from None
            raise Refused(401, exc.code, str(exc), "login") from None

    async def deny(self, request: Request, request_id: str, action: str, ident: Identity,
                    status: int, reason: Reason, *, patient_id: UUID | None = None,
                    purpose: str | None = None, issue_type: str = "forbidden") -> Refused:
        await self.record(request, request_id, action=action, ident=ident, patient_id=patient_id,
                          purpose=purpose, reasons=[reason])
        return Refused(status, reason.code, reason.message, issue_type)

    def _purpose(self, request: Request) -> str | None:
        value = request.headers.get("x-purpose-of-use", "").strip().upper()
        return value or None

    # Routes -------------------------------------------------------------------------------------

    async def metadata(self, request: Request, request_id: str) -> Response:
        return fhir_response(capability_statement(self.ctx.clock()), request_id=request_id)

    async def patient_search(self, request: Request, request_id: str) -> Response:
        ident = await self.authenticate(request, request_id, "lookup")
        purpose = self._purpose(request)
        if ident.role != "physician":
            raise await self.deny(request, request_id, "lookup", ident, 403, Reason(
                "role.not_permitted", f"the {ident.role} role cannot look patients up"))
        if purpose not in ("TREAT", "ETREAT"):
            raise await self.deny(request, request_id, "lookup", ident, 400, Reason(
                "purpose.missing", "send X-Purpose-Of-Use: TREAT (or ETREAT)"), issue_type="required")
        system, sep, value = request.query_params.get("identifier", "").partition("|")
        if not sep or not system or not value:
            raise await self.deny(request, request_id, "lookup", ident, 400, Reason(
                "search.identifier", "search as identifier=<system>|<value>"), purpose=purpose,
                issue_type="invalid")
        patient_id = await self.ctx.records.find_patient(system, value)
        decision = Decision(True, [Reason("lookup.match" if patient_id else "lookup.no_match",
                                          "identifier lookup")])
        await self.record(request, request_id, action="lookup", ident=ident, patient_id=patient_id,
                          purpose=purpose, decision=decision,
                          disclosed=[f"Patient/{patient_id}"] if patient_id else [])
        entries = []
        if patient_id:
            # Minimum necessary: the id and the identifier the caller already holds.
            found = {"resourceType": "Patient", "id": str(patient_id),
                     "identifier": [{"system": system, "value": value}]}
            entries.append((f"urn:uuid:{patient_id}", dumps(found)))
        return fhir_response(bundle(entries, now=self.ctx.clock()), request_id=request_id)

    async def _patient_id(self, request: Request, request_id: str, action: str,
                          ident: Identity) -> UUID:
        try:
            return UUID(request.path_params["pid"])
        except ValueError:
            raise await self.deny(request, request_id, action, ident, 404, Reason(
                "patient.not_found", "no patient has this id"), issue_type="not-found") from None

    async def break_glass(self, request: Request, request_id: str) -> Response:
        ident = await self.authenticate(request, request_id, "break-glass")
        patient_id = await self._patient_id(request, request_id, "break-glass", ident)
        if ident.role != "physician":
            raise await self.deny(request, request_id, "break-glass", ident, 403, Reason(
                "role.not_permitted", "only a physician may break the glass"),
                patient_id=patient_id, purpose="ETREAT")
        try:
            body = await request.json()
            code, text = check_break_glass(body.get("reason_code"), body.get("reason"))
        except (ValueError, AttributeError, InvalidBreakGlass) as exc:
            message = str(exc) if isinstance(exc, InvalidBreakGlass) else \
                "send a JSON object with reason_code and reason"
            raise await self.deny(request, request_id, "break-glass", ident, 400, Reason(
                "break_glass.invalid", message), patient_id=patient_id, purpose="ETREAT",
                issue_type="required") from None
        root = await self.ctx.records.root(patient_id)
        if root is None:
            raise await self.deny(request, request_id, "break-glass", ident, 404, Reason(
                "patient.not_found", "no patient has this id"), patient_id=patient_id,
                purpose="ETREAT", issue_type="not-found")
        patient_id = root  # the grant is for the person, whichever of their ids was asked
        grant = await self.ctx.consent.grant_break_glass(
            person=ident.person, institution=ident.institution, patient_id=patient_id,
            reason_code=code, reason=text, now=self.ctx.clock())
        decision = Decision(True, [Reason("break_glass.granted", BREAK_GLASS_TEXT)],
                            legal_basis=f"break-glass:{grant.grant_id}", break_glass=True,
                            obligations=["regulator-review", "notify-patient"])
        await self.record(request, request_id, action="break-glass", ident=ident,
                          patient_id=patient_id, purpose="ETREAT", decision=decision,
                          extra={"reason_code": code, "reason_text": text,
                                 "expires_at": grant.expires_at.isoformat()})
        return fhir_response(operation_outcome(
            "break_glass.granted", f"emergency access granted until {grant.expires_at.isoformat()}; "
            "read with X-Purpose-Of-Use: ETREAT; this access is flagged for review and the "
            "patient will be told", issue_type="informational", severity="information"),
            request_id=request_id)

BREAK_GLASS_TEXT = "break-glass grant issued"


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True
Handler = Callable[[Request, str], Awaitable[Response]]


def _wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            return await handler(request, request_id)
        except Refused as refused:
            return fhir_response(operation_outcome(refused.code, refused.message,
                                                   issue_type=refused.issue_type),
                                 refused.status, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return fhir_response(operation_outcome(
                "internal", f"the exchange failed to answer; quote request id {request_id}",
                issue_type="exception"), 500, request_id)
    return endpoint


def create_app(ctx: ApiContext) -> Starlette:
    from exchange.record_http import record_routes
    from exchange.referral_http import referral_routes
    from exchange.regulator import regulator_routes

    ex = Exchange(ctx)
    return Starlette(routes=[
        Route("/fhir/metadata", _wrap(ex.metadata)),
        Route("/fhir/Patient", _wrap(ex.patient_search)),
        *record_routes(ex, _wrap),
        Route("/fhir/Patient/{pid}/$break-glass", _wrap(ex.break_glass), methods=["POST"]),
        *regulator_routes(ex, _wrap),
        *referral_routes(ex, ctx.referrals, _wrap),
    ])
