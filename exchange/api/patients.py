"""The patient index and emergency access over HTTP: the CapabilityStatement, MPI lookup by
identifier, and ``$break-glass``."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import parse_qs

from consent.decision import (
    BreakGlassGrant,
    Decision,
    InvalidBreakGlass,
    Reason,
    check_break_glass,
    may_find,
)
from exchange.api.access import PATH_PATIENT, Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.fhir import bundle, capability_statement, operation_outcome
from exchange.api.responses import Refused, fhir_response
from exchange.servers.nats import PORTAL, notify_subject
from projections.render import dumps

log = logging.getLogger(__name__)

BREAK_GLASS_TEXT = "break-glass grant issued"

METADATA = Access("metadata", public=True)
LOOKUP = Access(
    "lookup",
    roles=frozenset({"physician"}),
    refused_role="the {role} role cannot look patients up",
    purposes=frozenset({"TREAT", "ETREAT"}),
    refused_purpose="send X-Purpose-Of-Use: TREAT (or ETREAT)",
)
BREAK_GLASS = Access(
    "break-glass",
    roles=frozenset({"physician"}),
    refused_role="only a physician may break the glass",
    purpose="ETREAT",
    patient=PATH_PATIENT,
)


class PatientRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def metadata(self, call: Call) -> Answer:
        return Answer(fhir_response(capability_statement(call.now), request_id=call.request_id))

    async def patient_search(self, call: Call) -> Answer:
        """``GET /fhir/Patient?identifier=<system>|<value>``, or the same as a form posted to
        ``/fhir/Patient/_search`` (FHIR's search by POST: the resident ID stays out of URLs
        and server logs)."""
        if call.request.method == "POST":  # application/x-www-form-urlencoded, as FHIR says
            try:
                form = parse_qs((await call.request.body()).decode("utf-8"))
            except UnicodeDecodeError:
                form = {}
            given = (form.get("identifier") or [""])[0]
        else:
            given = call.request.query_params.get("identifier", "")
        system, sep, value = str(given).partition("|")
        if not sep or not system or not value:
            raise Refused(
                400, "search.identifier", "search as identifier=<system>|<value>", "invalid"
            )
        patient_id = await self.ctx.records.find_patient(system, value)
        decision = Decision(True, [Reason("lookup.no_match", "identifier lookup")])
        if patient_id:
            ident = call.who
            view = await self.ctx.consent.view(
                patient_id, institution=ident.institution, person=ident.person, at=call.now
            )
            if view is not None:
                decision = may_find(call.purpose or "", ident.institution, call.now, view.facts)
                if not decision.permit:  # a referral it takes part in, pending ones included?
                    referred, _ = await self.ctx.referrals.search(
                        party=ident.institution, patients=view.members, limit=1
                    )
                    if referred:
                        decision = may_find(
                            call.purpose or "",
                            ident.institution,
                            call.now,
                            view.facts,
                            referred=True,
                        )
        entries = []
        if patient_id and decision.permit:
            # Minimum necessary: the id and the identifier the caller already holds.
            found = {
                "resourceType": "Patient",
                "id": str(patient_id),
                "identifier": [{"system": system, "value": value}],
            }
            entries.append((f"urn:uuid:{patient_id}", dumps(found)))
        # Not permitted looks exactly like not found; the audit says which it was.
        return Answer(
            fhir_response(bundle(entries, now=call.now), request_id=call.request_id),
            decision,
            patient_id=patient_id,
            disclosed=[f"Patient/{patient_id}"] if entries else [],
        )

    async def break_glass(self, call: Call) -> Answer:
        try:
            body = await call.request.json()
            code, text = check_break_glass(body.get("reason_code"), body.get("reason"))
        except (ValueError, AttributeError, InvalidBreakGlass) as exc:
            message = (
                str(exc)
                if isinstance(exc, InvalidBreakGlass)
                else "send a JSON object with reason_code and reason"
            )
            raise Refused(400, "break_glass.invalid", message, "required") from None
        assert call.patient_id is not None
        root = await self.ctx.records.root(call.patient_id)
        if root is None:
            raise Refused(404, "patient.not_found", "no patient has this id", "not-found")
        # The grant is for the person, whichever of their ids was asked.
        ident = call.who
        now = self.ctx.clock()
        grant = await self.ctx.consent.grant_break_glass(
            person=ident.person,
            institution=ident.institution,
            patient_id=root,
            reason_code=code,
            reason=text,
            now=now,
            policy=self.ctx.policy,
        )
        if isinstance(grant, Reason):  # past this person's rate: refused, and an alert
            raise Refused.because(
                429,
                grant,
                "throttled",
                patient_id=root,
                decision=Decision(False, [grant], alert="break_glass.rate_limited"),
            )
        decision = Decision(
            True,
            [Reason("break_glass.granted", BREAK_GLASS_TEXT)],
            legal_basis=f"break-glass:{grant.grant_id}",
            break_glass=True,
            obligations=["regulator-review", "notify-patient"],
            alert="break_glass.granted",  # every one, at once, to the regulator
        )
        await self._notify_patient(grant, ident.institution, now)
        return Answer(
            fhir_response(
                operation_outcome(
                    "break_glass.granted",
                    f"emergency access granted until {grant.expires_at.isoformat()}; "
                    "read with X-Purpose-Of-Use: ETREAT; this access is flagged for review and the "
                    "patient will be told",
                    issue_type="informational",
                    severity="information",
                ),
                request_id=call.request_id,
            ),
            decision,
            patient_id=root,
            extra={
                "reason_code": code,
                "reason_text": text,
                "expires_at": grant.expires_at.isoformat(),
            },
        )

    async def _notify_patient(
        self, grant: BreakGlassGrant, institution: str, now: datetime
    ) -> None:
        """The patient's notice (PIPL Art. 18: told afterwards), to the patient portal's
        durable notifications: which institution, why, when and until when; nothing else."""
        if self.ctx.publish is None:
            return
        notice = {
            "kind": "break_glass",
            "grant_id": str(grant.grant_id),
            "patient_id": str(grant.patient_id),
            "institution": institution,
            "reason_code": grant.reason_code,
            "granted_at": now.isoformat(),
            "expires_at": grant.expires_at.isoformat(),
        }
        try:
            await self.ctx.publish(notify_subject(self.ctx.consortium, PORTAL), notice)
        except Exception as exc:  # the review queue still holds the obligation
            log.warning("break-glass notice not published (%s)", type(exc).__name__)


def patient_routes(ctx: ApiContext) -> list[ApiRoute]:
    r = PatientRoutes(ctx)
    return [
        ApiRoute("GET", "/fhir/metadata", METADATA, r.metadata),
        ApiRoute("GET", "/fhir/Patient", LOOKUP, r.patient_search),
        ApiRoute("POST", "/fhir/Patient/_search", LOOKUP, r.patient_search),
        ApiRoute("POST", "/fhir/Patient/{pid}/$break-glass", BREAK_GLASS, r.break_glass),
    ]
