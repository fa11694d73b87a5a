"""The physician's pages: the start page (patient search), the search itself and the patient's
record. Each is declared with the access of its API route (``page=True``: the session cookie
signs in, a refusal is a page) and answers from the API's own handler, so that it is decided
and audited exactly as that route is."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.responses import RedirectResponse

from consent.decision import Decision, Reason
from domain.identity import HEALTH_CARD_SYSTEM, RESIDENT_ID_SYSTEM, mrn_system
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.patients import LOOKUP, PatientRoutes
from exchange.api.record import READ, RecordRoutes
from exchange.api.responses import Refused
from exchange.pages.i18n import N_
from exchange.pages.render import page
from exchange.pages.session import CSRF_FIELD, csrf_valid
from exchange.pages.sign_in import form_of

HOME = Access(
    "page.home",
    roles=frozenset({"physician", "nurse", "patient", "regulator"}),
    refused_role="the {role} role has no pages",
    page=True,
)
SEARCH = dataclasses.replace(
    LOOKUP, action="page.search", defaults={"physician": "TREAT"}, page=True
)
RECORD = dataclasses.replace(
    READ,
    action="page.record",
    defaults={"patient": "PATRQT", "physician": "TREAT", "nurse": "TREAT"},
    page=True,
)


class PhysicianPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.search_api = PatientRoutes(ctx).patient_search
        self.record_api = RecordRoutes(ctx).everything

    async def home(self, call: Call) -> Answer:
        if call.who.role == "patient":  # a patient's start page is their own record
            return Answer(RedirectResponse(f"/app/patients/{call.who.person}", 303))
        if call.who.role == "regulator":  # a regulator's is the console
            return Answer(RedirectResponse("/app/audit/", 303))
        found = call.request.query_params.get("found")
        return Answer(
            page(
                call.request,
                "home.html",
                self.ctx.page_key,
                who=call.who,
                not_found=found == "none",
                systems=[
                    (RESIDENT_ID_SYSTEM, N_("Resident ID")),
                    (HEALTH_CARD_SYSTEM, N_("Health card")),
                    (
                        mrn_system(call.who.institution),
                        N_("Medical record number (your institution)"),
                    ),
                ],
            ),
            Decision(True, [Reason("page.home", "the start page: no patient data")]),
        )

    async def search(self, call: Call) -> Answer:
        """The API's lookup by a form posted with the session's CSRF token; the identifier
        never appears in an address."""
        form = await form_of(call.request)
        if not csrf_valid(self.ctx.page_key, call.request, form.get(CSRF_FIELD)):
            raise Refused(
                403, "page.csrf", N_("the form is stale or not this site's: sign in again")
            )
        system, value = form.get("system", ""), form.get("value", "").strip()
        body = f"identifier={system}|{value}".encode()
        call.request._body = body  # the API handler reads the posted form as its own
        answer = await self.search_api(call)
        found = json.loads(bytes(answer.response.body)).get("entry") or []
        target = f"/app/patients/{found[0]['resource']['id']}" if found else "/app/?found=none"
        return Answer(
            RedirectResponse(target, 303),
            answer.decision,
            patient_id=answer.patient_id,
            disclosed=answer.disclosed,
        )

    async def record(self, call: Call) -> Answer:
        """The patient's record across institutions, newest first."""
        answer = await self.record_api(call)
        bundle = json.loads(bytes(answer.response.body))
        resources = [e["resource"] for e in bundle.get("entry") or []]
        patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
        rows = sorted(
            (
                _row(r)
                for r in resources
                if r.get("resourceType") not in ("Patient", "OperationOutcome")
            ),
            key=lambda row: row["when"] or "",
            reverse=True,
        )
        withheld = [r for r in resources if r.get("resourceType") == "OperationOutcome"]
        html = page(
            call.request,
            "record.html",
            self.ctx.page_key,
            who=call.who,
            patient=patient,
            rows=rows,
            withheld=withheld,
        )
        return dataclasses.replace(answer, response=html)


def _row(resource: dict[str, Any]) -> dict[str, Any]:
    """One line of the timeline: when, what kind, what, and which institution sent it."""
    kind = resource.get("resourceType", "")
    when = (
        resource.get("effectiveDateTime")
        or (resource.get("effectivePeriod") or {}).get("start")
        or (resource.get("period") or {}).get("start")
        or resource.get("occurrenceDateTime")
        or resource.get("performedDateTime")
        or resource.get("authoredOn")
        or resource.get("whenHandedOver")
        or resource.get("recordedDate")
        or resource.get("date")
        or resource.get("issued")
    )
    concept = (
        resource.get("code")
        or resource.get("vaccineCode")
        or resource.get("medicationCodeableConcept")
        or resource.get("type")
        or {}
    )
    if isinstance(concept, list):
        concept = concept[0] if concept else {}
    codings = concept.get("coding") or [{}]
    what = concept.get("text") or codings[0].get("display") or codings[0].get("code") or ""
    sender = next(
        (
            e.get("valueReference", {}).get("display")
            for e in resource.get("extension") or []
            if str(e.get("url", "")).endswith("submitted-by")
        ),
        None,
    )
    return {"kind": kind, "when": when, "what": what, "sender": sender or ""}


def physician_pages(ctx: ApiContext) -> list[ApiRoute]:
    p = PhysicianPages(ctx)
    return [
        ApiRoute("GET", "/app/", HOME, p.home),
        ApiRoute("POST", "/app/search", SEARCH, p.search),
        ApiRoute("GET", "/app/patients/{pid}", RECORD, p.record),
    ]
