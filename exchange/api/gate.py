"""The one gate every request of the read API goes through, doing what each route's
``Access`` declares: a request id; authentication (a refused token is audited: 401, or 503
when revocations cannot be checked); the patient id; the role; the purpose of use; for a
patient route the facts (``ConsentState.view``, one query) and the decision of its rule in
``consent/decision.py``; then the handler, whose ``Answer`` is appended to the audit log
*before* it is sent. Every refusal — declared here or raised by a handler as ``Refused`` — is
audited and sent as an ``OperationOutcome``; if the audit append fails, no data leaves (503
``audit.unavailable``); anything else is a 500 that names the request id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from audit.disclosure import summary
from audit.postgres import AuditWriteError
from consent.decision import AccessRequest, Decision, Reason, is_own_record
from consent.postgres import RecordView
from domain.consent_items import RESEARCH
from exchange.api.access import Access, Answer, ApiRoute, Call, Handler, PatientSource
from exchange.api.context import ApiContext
from exchange.api.fhir import operation_outcome
from exchange.api.responses import AuditUnavailable, Refused, fhir_response
from exchange.auth.tokens import Identity, TokenError
from exchange.servers.nats import alert_subject
from exchange.telemetry.logs import REQUEST_ID

__all__ = ["ApiContext", "Gate"]

log = logging.getLogger(__name__)
AT_FORMAT = "_at is a ledger position or an instant with its offset, e.g. 2026-11-01T09:30:00+08:00"
# The cookie a page's sign-in sets (exchange/pages/session.py): its value is the token.
SESSION_COOKIE = "hie_session"
# How a page route's refusal is shown (exchange/pages): (refusal, request id, request).
RefusalPage = Callable[[Refused, str, Request], Response]


@dataclass
class _Admitted:
    """How far the gate got with a request: what a refusal at this point is recorded with."""

    ident: Identity | None = None
    patient_id: UUID | None = None
    purpose: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # what redecides the decision


class Gate:
    def __init__(self, ctx: ApiContext, refusal_page: RefusalPage | None = None) -> None:
        self.ctx = ctx
        self.refusal_page = refusal_page

    def endpoint(self, route: ApiRoute) -> Callable[[Request], Awaitable[Response]]:
        access, handler = route.access, route.handler
        if access.page and self.refusal_page is None:
            raise ValueError(f"{access.action}: a page route needs the gate's refusal page")

        async def endpoint(request: Request) -> Response:
            return await self.serve(access, handler, request)

        return endpoint

    async def serve(self, access: Access, handler: Handler, request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        logged = REQUEST_ID.set(request_id)  # every log line of this request names it
        try:
            return await self._serve(access, handler, request, request_id)
        finally:
            REQUEST_ID.reset(logged)
            self.ctx.telemetry.reads.answered(access.action, started)

    async def _serve(
        self, access: Access, handler: Handler, request: Request, request_id: str
    ) -> Response:
        try:
            response = await self._served(access, handler, request, request_id)
        except Refused as refused:
            if not (access.page and self.refusal_page is not None):
                return refused.response(request_id)
            response = self.refusal_page(refused, request_id, request)
        if "x-request-id" not in response.headers:  # a page's, as every API answer has it
            response.headers["X-Request-Id"] = request_id
        return response

    async def _served(
        self, access: Access, handler: Handler, request: Request, request_id: str
    ) -> Response:
        so_far = _Admitted()
        try:
            if access.public:
                return (
                    await handler(
                        Call(request, request_id, access.action, None, None, self.ctx.clock())
                    )
                ).response
            try:
                call = await self._admit(access, request, request_id, so_far)
                answer = await handler(call)
            except Refused as refused:
                if not isinstance(refused, AuditUnavailable):
                    await self._refusal(access, request, request_id, so_far, refused)
                raise
            await self._answer(access, call, so_far, answer)
            return answer.response
        except Refused:
            raise
        except Exception:
            log.exception("request %s failed", request_id)
            return fhir_response(
                operation_outcome(
                    "internal",
                    f"the exchange failed to answer; quote request id {request_id}",
                    issue_type="exception",
                ),
                500,
                request_id,
            )

    # Admission, step by step --------------------------------------------------------------------

    async def _admit(
        self, access: Access, request: Request, request_id: str, so_far: _Admitted
    ) -> Call:
        ident = so_far.ident = await self._authenticate(request, access.page)
        if access.patient is not None:
            so_far.patient_id = _patient_id(access.patient, request)
        so_far.purpose = access.purpose
        if access.decide is None and ident.role not in access.roles:
            raise _role_refused(access, ident)
        sent = request.headers.get("x-purpose-of-use", "").strip().upper() or None
        if sent is None and access.page:  # a page says its purpose in its address or form
            sent = request.query_params.get("purpose", "").strip().upper()[:16] or None
        if access.purposes is not None:
            purpose = sent or access.defaults.get(ident.role)
            if purpose is None or (access.purposes != "any" and purpose not in access.purposes):
                raise Refused(
                    400, "purpose.missing", access.refused_purpose, "required", purpose=sent
                )
            so_far.purpose = purpose
        now = self.ctx.clock()
        at = await self._as_of(request) if access.as_of else None
        view = decision = then = None
        if access.decide is not None:
            project = request.headers.get("x-research-project", "").strip()[:64]
            view, decision, then = await self._decide(access, ident, so_far, sent, now, at, project)
        return Call(
            request,
            request_id,
            access.action,
            ident,
            so_far.purpose,
            now,
            so_far.patient_id,
            view,
            decision,
            at,
            then,
        )

    async def _authenticate(self, request: Request, page: bool = False) -> Identity:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if page and not scheme and request.cookies.get(SESSION_COOKIE):
            scheme, token = "bearer", request.cookies[SESSION_COOKIE]  # a page's signed-in caller
        try:
            if scheme.lower() != "bearer" or not token:
                raise TokenError("send Authorization: Bearer <token> (issue one with hie token)")
            ident = await self.ctx.tokens.authenticate(token.strip(), now=self.ctx.clock())
            if ident.role == "patient" and not _is_uuid(ident.person):
                raise TokenError("a patient token names the patient by regional id")
            return ident
        except TokenError as exc:
            if exc.code == "token.revocation_unavailable":  # ours, not the caller's fault
                raise Refused(503, exc.code, str(exc), "transient") from None
            raise Refused(401, exc.code, str(exc), "login") from None

    async def _as_of(self, request: Request) -> int | None:
        """``_at=``: a ledger position (digits) or an instant with its offset; None: now."""
        raw = request.query_params.get("_at")
        if raw is None:
            return None
        try:
            if raw.isdigit():
                return int(raw)
            instant = datetime.fromisoformat(raw)
            if instant.tzinfo is None:
                raise ValueError
        except ValueError:
            raise Refused(400, "search.at", AT_FORMAT, "invalid") from None
        return await self.ctx.records.position_at(instant)

    async def _decide(
        self,
        access: Access,
        ident: Identity,
        so_far: _Admitted,
        sent: str | None,
        now: datetime,
        at: int | None,
        project: str = "",
    ) -> tuple[RecordView, Decision, UUID | None]:
        assert access.decide is not None and so_far.patient_id is not None
        # One query: who the id is now, the identities merged into it, and the decision's
        # facts as of the projection's position.
        view = await self.ctx.consent.view(
            so_far.patient_id, institution=ident.institution, person=ident.person, at=now
        )
        then = (
            await self.ctx.records.root(so_far.patient_id, at) if view and at is not None else None
        )
        if view is None or (at is not None and then is None):
            raise Refused(
                404,
                "patient.not_found",
                "no patient has this id" + (" at that time" if at is not None else ""),
                "not-found",
            )
        own = is_own_record(ident.role, ident.person, view.members)
        purpose = so_far.purpose if so_far.purpose is not None else (sent or "")
        if purpose != RESEARCH:
            project = ""
        elif project:  # a research read is decided against the project it names
            found = await self.ctx.consent.research.get(project)
            view = replace(view, facts=replace(view.facts, research=found))
        decision = access.decide(
            AccessRequest(
                ident.person,
                ident.role,
                ident.institution,
                view.root,
                purpose,
                now,
                view.position,
                own,
            ),
            view.facts,
            self.ctx.policy,
        )
        so_far.patient_id = view.root  # from here on, about the surviving identity
        if access.redecidable:  # enough to decide it again from the ledger (api/redecide.py)
            so_far.facts = {
                "as_of_position": view.position,
                "decided_at": now.isoformat(),
                "policy": self.ctx.policy.fingerprint(),
                **({"record_at_position": at} if at is not None else {}),
                **({"research_project": project} if project else {}),
                **(
                    {"results_since": decision.results_since.isoformat()}
                    if decision.results_since
                    else {}
                ),
            }
        if not decision.permit:
            raise refusal_of(decision)
        if ident.role not in access.roles:  # the route's declaration bounds any rule
            raise _role_refused(access, ident)
        return view, decision, then

    # The audit record ---------------------------------------------------------------------------

    async def _answer(self, access: Access, call: Call, so_far: _Admitted, answer: Answer) -> None:
        decision = answer.decision or call.decision
        await self._append(
            call.request,
            call.request_id,
            action=access.action,
            ident=call.ident,
            patient_id=answer.patient_id or call.patient_id,
            purpose=answer.purpose or call.purpose,
            decision=decision,
            reasons=decision.reasons if decision else [],
            disclosure=answer.disclosure or summary(answer.disclosed, self.ctx.hash_name),
            categories=answer.categories,
            extra={**so_far.facts, **(answer.extra or {})},
        )

    async def _refusal(
        self, access: Access, request: Request, request_id: str, so_far: _Admitted, refused: Refused
    ) -> None:
        """A refusal is about what the gate knew when it was raised; before authentication,
        it is a failed sign-in (``<action>.authenticate``, nobody named)."""
        await self._append(
            request,
            request_id,
            ident=so_far.ident,
            action=access.action if so_far.ident else f"{access.action}.authenticate",
            patient_id=refused.patient_id or so_far.patient_id,
            purpose=refused.purpose or so_far.purpose,
            decision=refused.decision,
            reasons=refused.decision.reasons if refused.decision else [refused.reason],
            disclosure=summary((), self.ctx.hash_name),
            categories=(),
            extra={**so_far.facts, **(refused.extra or {})},
        )

    async def _append(
        self,
        request: Request,
        request_id: str,
        *,
        action: str,
        ident: Identity | None,
        patient_id: UUID | None,
        purpose: str | None,
        decision: Decision | None,
        reasons: Sequence[Reason],
        disclosure: Mapping[str, Any],
        categories: Sequence[str],
        extra: Mapping[str, Any],
    ) -> None:
        record = {
            "action": action,
            "request_id": request_id,
            "route": request.url.path,
            "person": ident.person if ident else None,
            "role": ident.role if ident else None,
            "institution": ident.institution if ident else None,
            "token_id": ident.token_id if ident else None,
            "patient_id": str(patient_id) if patient_id else None,
            "purpose": purpose,
            "decision": "permit" if decision and decision.permit else "deny",
            "reasons": [{"code": r.code, "message": r.message} for r in reasons],
            "legal_basis": decision.legal_basis if decision else None,
            "consent_id": str(decision.consent_id) if decision and decision.consent_id else None,
            "break_glass": bool(decision and decision.break_glass),
            "care_basis": decision.care_basis if decision else None,
            "obligations": decision.obligations if decision else [],
            **disclosure,
            # The data categories the response held (breach scope: what was touched), and
            # those the decision let through.
            "categories": sorted(categories),
            "permitted": list(decision.categories) if decision and decision.permit else [],
            "alert": decision.alert if decision else None,
            "source": request.client.host if request.client else None,
            **extra,
        }
        try:
            seq = await self.ctx.audit_writer.append(record, self.ctx.clock())
        except AuditWriteError:
            log.exception("audit append failed; refusing request %s", request_id)
            raise AuditUnavailable() from None
        self.ctx.telemetry.reads.decided(
            action, record["decision"] == "permit", purpose, record["break_glass"]
        )
        if record["alert"]:
            await self._raise_alert(seq, record)

    async def _raise_alert(self, seq: int, record: Mapping[str, Any]) -> None:
        """Tell the regulator's console at once (the audit log, and /audit/alerts, hold it
        whatever becomes of this): what, who, where, about which patient; no clinical data."""
        if self.ctx.publish is None:
            return
        alert = {
            k: record.get(k)
            for k in ("alert", "action", "route", "person", "role", "institution", "patient_id")
        }
        try:
            await self.ctx.publish(alert_subject(self.ctx.consortium), {"seq": seq, **alert})
        except Exception as exc:
            log.warning("alert of audit record %d not published (%s)", seq, type(exc).__name__)


# Refusals whose reason is about the request itself, not the record: told as they are.
_ABOUT_THE_REQUEST = frozenset(
    {
        "role.not_permitted",
        "role.not_own_record",
        "purpose.not_supported",
        "break_glass.no_grant",
        "consent.not_permitted",  # the Consent route's own rule: who reads consents at all
    }
)
NOT_PERMITTED = (
    "this record cannot be read for this purpose now. Ask the patient for a separate consent "
    "that names your institution and purpose; in an emergency, POST $break-glass with a "
    "reason. The exchange's regulator can tell you more: quote this request's id"
)


def refusal_of(decision: Decision) -> Refused:
    """What a refused caller is told: what they can do, never what the record holds (a seal,
    a withdrawn consent, a consent's scope or purposes); the audit keeps every reason."""
    first = decision.reasons[0]
    if first.code in _ABOUT_THE_REQUEST:
        return Refused(403, first.code, first.message, decision=decision)
    return Refused(403, "access.not_permitted", NOT_PERMITTED, decision=decision)


def _role_refused(access: Access, ident: Identity) -> Refused:
    return Refused(403, "role.not_permitted", access.refused_role.format(role=ident.role))


def _patient_id(source: PatientSource, request: Request) -> UUID:
    try:
        return UUID(source.raw(request))
    except ValueError:
        raise Refused(source.status, source.code, source.message, source.issue_type) from None


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True
