"""The patient index and emergency access over HTTP: the CapabilityStatement, MPI lookup by
identifier, and ``$break-glass``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from consent.decision import Decision, InvalidBreakGlass, Reason, check_break_glass
from exchange.api.fhir import bundle, capability_statement, operation_outcome
from exchange.api.gate import Exchange
from exchange.api.responses import fhir_response
from projections.render import dumps

BREAK_GLASS_TEXT = "break-glass grant issued"


class PatientRoutes:
    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    # Routes -------------------------------------------------------------------------------------

    async def metadata(self, request: Request, request_id: str) -> Response:
        return fhir_response(capability_statement(self.ex.ctx.clock()), request_id=request_id)

    async def patient_search(self, request: Request, request_id: str) -> Response:
        ident = await self.ex.authenticate(request, request_id, "lookup")
        purpose = self.ex.purpose(request)
        if ident.role != "physician":
            raise await self.ex.deny(request, request_id, "lookup", ident, 403, Reason(
                "role.not_permitted", f"the {ident.role} role cannot look patients up"))
        if purpose not in ("TREAT", "ETREAT"):
            raise await self.ex.deny(request, request_id, "lookup", ident, 400, Reason(
                "purpose.missing", "send X-Purpose-Of-Use: TREAT (or ETREAT)"), issue_type="required")
        system, sep, value = request.query_params.get("identifier", "").partition("|")
        if not sep or not system or not value:
            raise await self.ex.deny(request, request_id, "lookup", ident, 400, Reason(
                "search.identifier", "search as identifier=<system>|<value>"), purpose=purpose,
                issue_type="invalid")
        patient_id = await self.ex.ctx.records.find_patient(system, value)
        decision = Decision(True, [Reason("lookup.match" if patient_id else "lookup.no_match",
                                          "identifier lookup")])
        await self.ex.record(request, request_id, action="lookup", ident=ident, patient_id=patient_id,
                          purpose=purpose, decision=decision,
                          disclosed=[f"Patient/{patient_id}"] if patient_id else [])
        entries = []
        if patient_id:
            # Minimum necessary: the id and the identifier the caller already holds.
            found = {"resourceType": "Patient", "id": str(patient_id),
                     "identifier": [{"system": system, "value": value}]}
            entries.append((f"urn:uuid:{patient_id}", dumps(found)))
        return fhir_response(bundle(entries, now=self.ex.ctx.clock()), request_id=request_id)

    async def break_glass(self, request: Request, request_id: str) -> Response:
        ident = await self.ex.authenticate(request, request_id, "break-glass")
        patient_id = await self.ex.patient_id(request, request_id, "break-glass", ident)
        if ident.role != "physician":
            raise await self.ex.deny(request, request_id, "break-glass", ident, 403, Reason(
                "role.not_permitted", "only a physician may break the glass"),
                patient_id=patient_id, purpose="ETREAT")
        try:
            body = await request.json()
            code, text = check_break_glass(body.get("reason_code"), body.get("reason"))
        except (ValueError, AttributeError, InvalidBreakGlass) as exc:
            message = str(exc) if isinstance(exc, InvalidBreakGlass) else \
                "send a JSON object with reason_code and reason"
            raise await self.ex.deny(request, request_id, "break-glass", ident, 400, Reason(
                "break_glass.invalid", message), patient_id=patient_id, purpose="ETREAT",
                issue_type="required") from None
        root = await self.ex.ctx.records.root(patient_id)
        if root is None:
            raise await self.ex.deny(request, request_id, "break-glass", ident, 404, Reason(
                "patient.not_found", "no patient has this id"), patient_id=patient_id,
                purpose="ETREAT", issue_type="not-found")
        patient_id = root  # the grant is for the person, whichever of their ids was asked
        grant = await self.ex.ctx.consent.grant_break_glass(
            person=ident.person, institution=ident.institution, patient_id=patient_id,
            reason_code=code, reason=text, now=self.ex.ctx.clock())
        decision = Decision(True, [Reason("break_glass.granted", BREAK_GLASS_TEXT)],
                            legal_basis=f"break-glass:{grant.grant_id}", break_glass=True,
                            obligations=["regulator-review", "notify-patient"])
        await self.ex.record(request, request_id, action="break-glass", ident=ident,
                          patient_id=patient_id, purpose="ETREAT", decision=decision,
                          extra={"reason_code": code, "reason_text": text,
                                 "expires_at": grant.expires_at.isoformat()})
        return fhir_response(operation_outcome(
            "break_glass.granted", f"emergency access granted until {grant.expires_at.isoformat()}; "
            "read with X-Purpose-Of-Use: ETREAT; this access is flagged for review and the "
            "patient will be told", issue_type="informational", severity="information"),
            request_id=request_id)
