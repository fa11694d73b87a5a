"""The patient's pages: their consents (given, withdrawn, waiting for their confirmation) with
a form to give one and a button to withdraw each, and "who read my record" (every access by
someone else, newest first, emergency access marked, with the portal's notices of it).

Each page is declared with the access of its API route (``page=True``) and answers from that
route's own handler — ``Consent?patient=`` (``consents``), ``POST /fhir/Consent``
(``give_consent``, the patient portal's signed submission), ``AuditEvent`` (a patient's own
rows) and ``/portal/notices`` — so it is decided and audited exactly as that route is. A
patient's page is about themself only: another patient's id is refused as the API refuses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse

from consent.decision import own_audit_only
from domain.institution import CARE_LEVELS
from exchange.api.access import PATH_PATIENT, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.notices import Notices
from exchange.api.record import CONSENT_GIVE, CONSENT_READ, RecordRoutes
from exchange.api.regulator import AUDIT_READ, Regulator
from exchange.api.responses import Refused
from exchange.pages.calls import body_of
from exchange.pages.i18n import N_
from exchange.pages.notice import NoticeFile
from exchange.pages.patient_views import (
    EVERY_INSTITUTION,
    access_rows,
    consent_rows,
    notice_rows,
)
from exchange.pages.render import page
from exchange.pages.session import checked_form
from projections.tables import NAME as PROJECTION

ONLY_THE_PATIENT = frozenset({"patient"})
CONSENTS = dataclasses.replace(
    CONSENT_READ, action="page.consents", roles=ONLY_THE_PATIENT, patient=PATH_PATIENT, page=True
)
GIVE = dataclasses.replace(CONSENT_GIVE, action="page.consent-give", page=True)
READS = dataclasses.replace(AUDIT_READ, action="page.reads", roles=ONLY_THE_PATIENT, page=True)
# The newest accesses a page shows: the API's largest page of AuditEvents.
SHOWN = 1000
# How long a give or withdraw waits for the shared record to hold it before showing the list.
SETTLE_SECONDS = 5.0


def _own(call: Call) -> str:
    """The path's patient id, when it is the caller's own (else refused as the API refuses)."""
    pid = str(call.request.path_params.get("pid", ""))
    refusal = own_audit_only(call.who.role, call.who.person, pid)
    if refusal is not None:
        raise Refused.because(403, refusal)
    return pid


def _with(call: Call, query: dict[str, str], body: bytes | None = None) -> Call:
    """The call as the API's handler expects it: its own query (not the page's ``?lang=``),
    and a posted body the handler reads as its own."""
    scope = dict(call.request.scope)
    scope["query_string"] = urlencode(query).encode()
    request = Request(scope, call.request.receive)
    if body is not None:
        request._body = body
    return dataclasses.replace(call, request=request)


class PatientPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        record = RecordRoutes(ctx)
        self.consents_api, self.give_api = record.consents, record.give_consent
        self.audit_api = Regulator(ctx).audit_events
        self.notices_api = Notices(ctx).notices
        self.notice = NoticeFile(ctx.consent_notice)

    async def _institutions(self) -> list[tuple[str, str]]:
        """(code, name) of the consortium's institutions that treat patients."""
        rows = await self.ctx.records.pool.fetch(
            "SELECT code, name FROM institutions WHERE level = ANY($1) ORDER BY position",
            list(CARE_LEVELS),
        )
        return [(str(r["code"]), str(r["name"])) for r in rows]

    async def _names(self) -> dict[str, str]:
        rows = await self.ctx.records.pool.fetch("SELECT code, name FROM institutions")
        return {str(r["code"]): str(r["name"]) for r in rows}

    async def consents(self, call: Call) -> Answer:
        """The patient's consents, each in words, and the form to give another."""
        answer = await self.consents_api(call)
        entries = body_of(answer).get("entry") or []
        institutions = await self._institutions()
        notice = self.notice.current()
        html = page(
            call.request,
            "patient_consents.html",
            self.ctx.page_key,
            who=call.who,
            here="consents",
            consents=consent_rows([e["resource"] for e in entries], dict(institutions), notice),
            institutions=institutions,
            notice=notice,
            done=call.request.query_params.get("done", ""),
        )
        return dataclasses.replace(answer, response=html)

    async def change(self, call: Call) -> Answer:
        """Give, withdraw or confirm a consent: the portal's submission, as the API records it."""
        form = await checked_form(self.ctx.page_key, call.request)
        pid = _own(call)
        act = form.get("act", "")
        if act in ("withdraw", "confirm"):
            body: dict[str, Any] = {act: form.get("consent", "")}
        elif act == "give":
            notice = self.notice.current()
            if notice is None:
                raise Refused(
                    503,
                    "page.consent_no_notice",
                    N_("the consortium has not published its notice: give the consent at a clinic"),
                    "transient",
                )
            if form.get("notice_sha256") != notice.sha256:
                raise Refused(
                    409,
                    "page.consent_notice_changed",
                    N_("the notice has changed since this page was shown: read it again"),
                    "conflict",
                )
            if form.get("read_notice") != "yes":
                raise Refused(
                    400, "page.consent_notice", N_("read the notice and tick that you have")
                )
            asked = form.get("scope", "")
            codes = {code for code, _ in await self._institutions()}
            if asked != EVERY_INSTITUTION and asked not in codes:
                raise Refused(400, "page.consent_scope", N_("choose who may read your record"))
            body = {"scope": [asked], "purposes": ["TREAT"], "notice_sha256": notice.sha256}
        else:
            raise Refused(400, "page.consent_act", N_("the form asked for nothing this page does"))
        answer = await self.give_api(_with(call, {}, json.dumps(body).encode()))
        position = (answer.extra or {}).get("position")
        if isinstance(position, int):
            await self._settled(position)
        done = {"give": "given", "withdraw": "withdrawn", "confirm": "confirmed"}[act]
        return dataclasses.replace(
            answer, response=RedirectResponse(f"/app/patients/{pid}/consents?done={done}", 303)
        )

    async def _settled(self, position: int) -> None:
        """Wait (briefly) until the shared record holds what the ledger took at ``position``,
        so that the list the patient is sent to shows their change."""
        loop = asyncio.get_running_loop()
        until = loop.time() + SETTLE_SECONDS
        while loop.time() < until:
            held = await self.ctx.records.pool.fetchval(
                "SELECT position FROM projection_position WHERE name = $1", PROJECTION
            )
            if held is not None and held >= position:
                return
            await asyncio.sleep(0.05)

    async def reads(self, call: Call) -> Answer:
        """Who read my record: the patient's own AuditEvents (the API's total tells where the
        newest page starts), less their own looks, and the notices of emergency access."""
        me = _own(call)
        counted = await self.audit_api(_with(call, {"_count": "1"}))
        total = int(body_of(counted).get("total") or 0)
        offset = max(total - SHOWN, 0)
        answer = await self.audit_api(_with(call, {"_count": str(SHOWN), "_offset": str(offset)}))
        events = [e["resource"] for e in body_of(answer).get("entry") or []]
        told = await self.notices_api(_with(call, {}))
        notices = body_of(told).get("notices") or []
        names = await self._names()
        html = page(
            call.request,
            "patient_reads.html",
            self.ctx.page_key,
            who=call.who,
            here="reads",
            rows=access_rows(events, names, me),
            notices=notice_rows(notices, names),
            earlier=offset > 0,
        )
        return dataclasses.replace(
            answer,
            response=html,
            patient_id=told.patient_id or (UUID(me) if me else None),
            purpose="PATRQT",
            disclosed=[*answer.disclosed, *told.disclosed],
        )


def patient_pages(ctx: ApiContext) -> list[ApiRoute]:
    p = PatientPages(ctx)
    return [
        ApiRoute("GET", "/app/patients/{pid}/consents", CONSENTS, p.consents),
        ApiRoute("POST", "/app/patients/{pid}/consents", GIVE, p.change),
        ApiRoute("GET", "/app/patients/{pid}/reads", READS, p.reads),
    ]
