"""The break-glass dialog: ``GET /app/patients/{pid}/break-glass`` asks for the reason code and
a written reason and states the consequences (the access is audited, the regulator reviews
it, the patient is told); its form POSTs (with the CSRF token) to the same address, which
answers from the API's own ``$break-glass`` handler under its access, and the physician lands
on the record read for ETREAT."""

from __future__ import annotations

import dataclasses
import json

from starlette.responses import RedirectResponse

from consent.decision import BREAK_GLASS_REASONS, BREAK_GLASS_TTL, MIN_REASON_TEXT, Decision, Reason
from exchange.api.access import PATH_PATIENT, Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.patients import BREAK_GLASS, PatientRoutes
from exchange.pages.i18n import N_
from exchange.pages.render import page
from exchange.pages.session import checked_form

# The dialog itself shows nothing of the record: only a physician may open it, as only a
# physician may break the glass.
DIALOG = Access(
    "page.break-glass-dialog",
    roles=BREAK_GLASS.roles,
    refused_role=BREAK_GLASS.refused_role,
    patient=PATH_PATIENT,
    page=True,
)
GRANT = dataclasses.replace(BREAK_GLASS, action="page.break-glass", page=True)
REASON_LABELS = {
    "unconscious": N_("Patient unable to consent (unconscious or incapacitated)"),
    "life-threatening": N_("Life-threatening emergency"),
    "public-health-emergency": N_("Public-health emergency"),
}


class BreakGlassPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.grant_api = PatientRoutes(ctx).break_glass

    async def dialog(self, call: Call) -> Answer:
        html = page(
            call.request,
            "break_glass.html",
            self.ctx.page_key,
            who=call.who,
            pid=call.request.path_params["pid"],
            reasons=[(c, REASON_LABELS.get(c, c)) for c in BREAK_GLASS_REASONS],
            min_reason=MIN_REASON_TEXT,
            hours=int(BREAK_GLASS_TTL.total_seconds() // 3600),
        )
        return Answer(
            html, Decision(True, [Reason("page.break-glass-dialog", "the form: no patient data")])
        )

    async def grant(self, call: Call) -> Answer:
        form = await checked_form(self.ctx.page_key, call.request)
        body = {"reason_code": form.get("reason_code", ""), "reason": form.get("reason", "")}
        call.request._body = json.dumps(body).encode()  # the API handler reads JSON
        answer = await self.grant_api(call)
        pid = call.request.path_params["pid"]
        return dataclasses.replace(
            answer, response=RedirectResponse(f"/app/patients/{pid}?purpose=ETREAT", 303)
        )


def break_glass_pages(ctx: ApiContext) -> list[ApiRoute]:
    b = BreakGlassPages(ctx)
    return [
        ApiRoute("GET", "/app/patients/{pid}/break-glass", DIALOG, b.dialog),
        ApiRoute("POST", "/app/patients/{pid}/break-glass", GRANT, b.grant),
    ]
