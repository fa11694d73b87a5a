"""The read API (Starlette): authenticate → consent decision → query → audit append → respond.

Every request that touches a patient appends its decision (permit or deny) to the audit log
before anything is sent; if that append fails, the request fails and no data leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request

from audit.postgres import AuditStore, AuditWriteError
from audit.writer import AuditWriter
from consent.decision import (
    DEFAULT_POLICY,
    AccessPolicy,
    Decision,
    Reason,
)
from consent.postgres import ConsentState
from exchange.api.responses import Refused, disclosure
from exchange.auth.chain import Authenticator
from exchange.auth.tokens import Identity, TokenError
from exchange.servers.audit_heads import HeadSigner
from projections.postgres import PatientRecordReader
from projections.referral_reader import ReferralReader

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
    portal: Any = None  # exchange.ingest.portal.Portal: consents a patient gives over HTTP
    clock: Clock = lambda: datetime.now(UTC)  # noqa: E731

    @property
    def audit(self) -> AuditStore:
        return self.audit_writer.store


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

    async def patient_id(self, request: Request, request_id: str, action: str,
                          ident: Identity) -> UUID:
        try:
            return UUID(request.path_params["pid"])
        except ValueError:
            raise await self.deny(request, request_id, action, ident, 404, Reason(
                "patient.not_found", "no patient has this id"), issue_type="not-found") from None

    def purpose(self, request: Request) -> str | None:
        value = request.headers.get("x-purpose-of-use", "").strip().upper()
        return value or None

def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True
