"""The patient record over HTTP: ``$everything`` (clinicians and the patient), the consent
state (``Consent``), and the consents a patient gives or withdraws with their own token.

Each read takes the facts of the decision as of the projection's ledger position, decides,
records the request, the position and the decision in the audit log, and only then sends
what the decision lets through. What is withheld is said as a statement about the decision
(the categories it does not disclose), never as a count or a hint of what the record holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consent.decision import AccessRequest, Decision, Reason, decide
from exchange.api.fhir import bundle, bundle_of, operation_outcome
from exchange.api.gate import Exchange
from exchange.api.responses import LISTED, Handler, Refused, fhir_response
from exchange.auth.tokens import Identity
from projections.render import dumps, render_patient

log = logging.getLogger(__name__)


def withheld_outcome(decision: Decision) -> dict[str, Any] | None:
    """The Bundle's note of what this decision does not disclose (the same for any record)."""
    if not decision.withheld and decision.results_since is None:
        return None
    text = ("not disclosed under this decision, whether or not the record holds any: "
            + ", ".join(decision.withheld)) if decision.withheld else ""
    if decision.results_since is not None:
        text += ("; " if text else "") + ("lab and vital results recorded before "
                                           f"{decision.results_since.date().isoformat()}")
    outcome = operation_outcome("disclosure.limited", text, issue_type="suppressed",
                                severity="information")
    outcome["issue"][0]["diagnostics"] = "categories: " + ",".join(decision.withheld)
    return outcome


class RecordRoutes:
    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    async def everything(self, request: Request, request_id: str) -> Response:
        ex = self.ex
        ident = await ex.authenticate(request, request_id, "read")
        patient_id = await ex.patient_id(request, request_id, "read", ident)
        purpose = ex.purpose(request) or ("PATRQT" if ident.role == "patient" else None)
        if purpose is None:
            raise await ex.deny(request, request_id, "read", ident, 400, Reason(
                "purpose.missing", "send X-Purpose-Of-Use: TREAT (or ETREAT after $break-glass)"),
                patient_id=patient_id, issue_type="required")
        at = await self._at(request, request_id, ident, patient_id, purpose)
        now = ex.ctx.clock()
        # One query: who the id is now, the identities merged into it, and the decision's
        # facts as of the projection's position.
        view = await ex.ctx.consent.view(patient_id, institution=ident.institution,
                                         person=ident.person, at=now)
        then = await ex.ctx.records.root(patient_id, at) if view and at is not None else None
        if view is None or (at is not None and then is None):
            raise await ex.deny(request, request_id, "read", ident, 404, Reason(
                "patient.not_found", "no patient has this id" + (
                    " at that time" if at is not None else "")), patient_id=patient_id,
                purpose=purpose, issue_type="not-found")
        own = ident.role == "patient" and ident.person in {str(m) for m in view.members}
        asked_for = AccessRequest(ident.person, ident.role, ident.institution, view.root,
                                  purpose, now, view.position, own)
        decision = decide(asked_for, view.facts, ex.ctx.policy)
        # Enough to decide this request again from the ledger as it stood (exchange/redecide).
        facts_at = {"as_of_position": view.position, "decided_at": now.isoformat(),
                    "policy": ex.ctx.policy.fingerprint(),
                    **({"record_at_position": at} if at is not None else {}),
                    **({"results_since": decision.results_since.isoformat()}
                       if decision.results_since else {})}
        if not decision.permit:
            await ex.record(request, request_id, action="read", ident=ident,
                            patient_id=view.root, purpose=purpose, decision=decision,
                            extra=facts_at)
            raise Refused(403, decision.reasons[0].code,
                          "; ".join(r.message for r in decision.reasons), "forbidden")
        shown_root = view.root
        members = view.members
        if at is not None and then is not None:
            # The record as it stood, but only of the identities decided on now: an identity
            # merged then and unmerged since is another person, whose consent was not asked.
            members = [m for m in await ex.ctx.records.members(then, at) if m in view.members]
        # The entries as of the position the decision was taken at: nothing newer leaves.
        as_of = at if at is not None else view.position
        first_line = first = None
        if "demographics" in decision.categories:
            first_line = f"Patient/{shown_root}"
            first = (f"urn:uuid:{shown_root}", dumps(render_patient(
                shown_root, identifiers=view.identifiers, demographics=view.demographics,
                birth_date=view.birth_date.isoformat() if view.birth_date else None,
                sex=view.sex)))
        page = await ex.ctx.records.bundle_entries(
            shown_root, members, as_of, categories=decision.categories,
            results_since=decision.results_since, first=first_line, listed=LISTED)
        count = page.count + (first is not None)
        summary: dict[str, Any] = {"disclosed": page.lines or [], "disclosed_count": count,
                                   "resource_types": page.types}
        if count > LISTED:  # counted, typed and digested (exchange/api/responses.py disclosure)
            summary["disclosed_sha256"] = page.digest
        touched = set(page.categories) | ({"demographics"} if first else set())
        await ex.record(request, request_id, action="read", ident=ident, patient_id=view.root,
                        purpose=purpose, decision=decision, extra=facts_at,
                        categories=sorted(touched), disclosure_summary=summary)
        return fhir_response(bundle_of(page.entries, page.count, now=now, first=first,
                                       outcome=withheld_outcome(decision)),
                             request_id=request_id)

    async def _at(self, request: Request, request_id: str, ident: Identity, patient_id: UUID,
                  purpose: str) -> int | None:
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
            raise await self.ex.deny(request, request_id, "read", ident, 400, Reason(
                "search.at", "_at is a ledger position or an instant with its offset, e.g. "
                "2026-11-01T09:30:00+08:00"), patient_id=patient_id, purpose=purpose,
                issue_type="invalid") from None
        return await self.ex.ctx.records.position_at(instant)

    async def consents(self, request: Request, request_id: str) -> Response:
        """``Consent?patient=<id>``: the patient's consents (a clinician treating them with
        TREAT, or the patient), each with its withdrawal if any."""
        ex = self.ex
        action = "consent-read"
        ident = await ex.authenticate(request, request_id, action)
        raw = request.query_params.get("patient", "").removeprefix("Patient/")
        try:
            asked = UUID(raw)
        except ValueError:
            raise await ex.deny(request, request_id, action, ident, 400, Reason(
                "search.patient", "search Consent by patient=<patient id>"),
                issue_type="invalid") from None
        now = ex.ctx.clock()
        view = await ex.ctx.consent.view(asked, institution=ident.institution,
                                         person=ident.person, at=now)
        root = view.root if view else None
        members = view.members if view else [asked]
        own = ident.role == "patient" and ident.person in {str(m) for m in members}
        # A clinician reads them only while treating the patient, and not a sealed record.
        reader = f"{ident.institution}/{ident.person}"
        clinician = (view is not None and ident.role in ex.ctx.policy.clinical_roles
                     and ex.purpose(request) == "TREAT"
                     and any(c.holds(ident.institution, now) for c in view.facts.care)
                     and not any(s.active(view.position) and reader not in s.readers
                                 for s in view.facts.seals))
        if root is None or not (own or clinician):
            raise await ex.deny(request, request_id, action, ident, 403 if root else 404, Reason(
                "consent.not_permitted" if root else "patient.not_found",
                "the patient, and clinicians treating them (X-Purpose-Of-Use: TREAT), read the "
                "consents" if root else "no patient has this id"), patient_id=root or asked,
                issue_type="forbidden" if root else "not-found")
        rows = await ex.ctx.consent.consents(members)
        decision = Decision(True, [Reason("consent.state", "the data subject, or a clinician "
                                          "who needs the basis of a decision")],
                            legal_basis="data-subject" if own else "care")
        await ex.record(request, request_id, action=action, ident=ident, patient_id=root,
                        purpose="PATRQT" if own else "TREAT", decision=decision,
                        disclosed=[f"Consent/{r['consent_id']}" for r in rows], categories=[])
        entries = [(f"urn:uuid:{r['consent_id']}", _with_withdrawal(r)) for r in rows]
        return fhir_response(bundle(entries, now=ex.ctx.clock()), request_id=request_id)

    async def give_consent(self, request: Request, request_id: str) -> Response:
        """A patient gives a consent (or, with ``withdraw``, withdraws one) with their token:
        the exchange records it as a signed submission of its patient portal."""
        ex = self.ex
        action = "consent-give"
        ident = await ex.authenticate(request, request_id, action)
        if ident.role != "patient" or ex.ctx.portal is None:
            raise await ex.deny(request, request_id, action, ident, 403, Reason(
                "role.not_permitted", "a patient gives or withdraws consent with their own "
                "token; an institution records a signed consent as a submission"))
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            raise await ex.deny(request, request_id, action, ident, 400, Reason(
                "consent.body", "send a JSON object"), issue_type="invalid") from None
        pid = UUID(ident.person)
        try:
            outcome = await ex.ctx.portal.record(pid, body, now=ex.ctx.clock())
        except Exception:
            log.exception("the patient portal failed on request %s", request_id)
            raise await ex.deny(request, request_id, action, ident, 503, Reason(
                "portal.unavailable", "the consent could not be confirmed; look at your "
                "consents before trying again"), patient_id=pid, purpose="PATRQT",
                issue_type="transient") from None
        decision = Decision(outcome.accepted, [Reason(p.code, p.message) for p in
                                               outcome.problems] or [Reason(
            "consent.recorded", "recorded in the ledger")], legal_basis="data-subject")
        await ex.record(request, request_id, action=action, ident=ident, patient_id=pid,
                        purpose="PATRQT", decision=decision, categories=[],
                        extra={"submission_id": outcome.submission_id,
                               "position": outcome.position})
        if not outcome.accepted:
            problems = outcome.problems
            raise Refused(422, problems[0].code if problems else "consent.refused",
                          "; ".join(str(p) for p in problems) or "refused", "invalid")
        return fhir_response({"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "details": {"text": f"recorded at ledger position {outcome.position}"}}],
            "id": outcome.consent_id}, 201, request_id)


def _with_withdrawal(row: Any) -> str:
    text: str = row["resource"]
    if row["withdrawn_at"] is None:
        return text
    # A withdrawn consent is inactive from its withdrawal on (FHIR Consent.status).
    return text.replace('"status":"active"', '"status":"inactive"', 1)


def record_routes(ex: Exchange, wrap: Callable[[Handler], Any]) -> list[Route]:
    r = RecordRoutes(ex)
    return [
        Route("/fhir/Patient/{pid}/$everything", wrap(r.everything)),
        Route("/fhir/Consent", wrap(r.consents)),
        Route("/fhir/Consent", wrap(r.give_consent), methods=["POST"]),
    ]
