"""The physician's pages: the start page (patient search), the search itself and the patient's
record. Each is declared with the access of its API route (``page=True``: the session cookie
signs in, a refusal is a page) and answers from the API's own handler, so that it is decided
and audited exactly as that route is."""

from __future__ import annotations

import dataclasses
from html import escape as esc
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.responses import RedirectResponse

from consent.decision import Decision, Reason
from domain.identity import HEALTH_CARD_SYSTEM, RESIDENT_ID_SYSTEM, mrn_system
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.patients import LOOKUP, PatientRoutes
from exchange.api.record import READ, RecordRoutes
from exchange.pages.calls import body_of
from exchange.pages.i18n import LANG_COOKIE, N_, chosen, translations
from exchange.pages.physician_as_of import as_of_pages
from exchange.pages.physician_break_glass import break_glass_pages
from exchange.pages.physician_chart import chart
from exchange.pages.physician_record import (
    CATEGORY_LABELS,
    LEVEL_LABELS,
    Filters,
    Row,
    lab_tests,
    row_of,
    summary,
    withheld_categories,
)
from exchange.pages.physician_referrals import referral_pages
from exchange.pages.render import local_time, page
from exchange.pages.session import checked_form
from exchange.pages.sign_in import to_record

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
TREND = dataclasses.replace(RECORD, action="page.trend")


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
        form = await checked_form(self.ctx.page_key, call.request)
        system, value = form.get("system", ""), form.get("value", "").strip()
        body = f"identifier={system}|{value}".encode()
        call.request._body = body  # the API handler reads the posted form as its own
        return to_record(await self.search_api(call))

    async def record(self, call: Call) -> Answer:
        """The patient's summary (IPS sections) and record across institutions, newest
        first, narrowed by the filters of the page's GET form."""
        answer, patient, rows, withheld, results_cut = await self._read(call)
        query = call.request.query_params
        filters = Filters.of(
            query, {r.category for r in rows}, {r.institution for r in rows if r.institution}
        )
        # Each row's local time and labels worked out once here, not per row in the template
        # (a 200-entry record: the template's own filters and macro cost several ms).
        when = {id(r): local_time(r.when) for r in rows}
        shown = [r for r in rows if filters.keep(r, when[id(r)][:10])]
        _ = translations(
            chosen(call.request.query_params.get("lang"), call.request.cookies.get(LANG_COOKIE))
        ).gettext
        categories = {c: _(label) for c, label in CATEGORY_LABELS.items()}
        levels = {k: _(label) for k, label in LEVEL_LABELS.items()}
        lines = Markup(
            "".join(
                f"<tr><td>{esc(when[id(r)])}</td><td>{esc(categories.get(r.category, r.category))}"
                f"</td><td>{esc(r.what)}{': ' + esc(r.value) if r.value else ''}</td>"
                f'<td><span class="sender">{esc(r.institution_name)}</span> '
                f'<span class="badge level-{esc(r.level or "unknown")}">'
                f"{esc(levels.get(r.level, _('Institution')))}</span></td></tr>\n"
                for r in shown
            )
        )  # escaped here, value by value, at a tenth of the template's cost per value
        html = page(
            call.request,
            "record.html",
            self.ctx.page_key,
            who=call.who,
            patient=patient,
            sections=summary(rows, withheld, results_cut),
            rows=shown,
            lines=lines,
            withheld=sorted(withheld),
            results_cut=results_cut,
            filters=filters,
            category_choices=sorted(
                {r.category for r in rows}, key=lambda c: list(CATEGORY_LABELS).index(c)
            ),
            institution_choices=sorted({(r.institution, r.institution_name) for r in rows}),
            category_labels=CATEGORY_LABELS,
            level_labels=LEVEL_LABELS,
            tests=lab_tests(rows) if filters.category in ("", "lab") else {},
            keep=_kept(query),
            pid=call.request.path_params["pid"],
            at=query.get("_at", ""),
            emergency=query.get("purpose", "").upper() == "ETREAT",
        )
        return dataclasses.replace(answer, response=html)

    async def trend(self, call: Call) -> Answer:
        """One lab test's results: a table and its trend chart."""
        answer, patient, rows, _, results_cut = await self._read(call)
        test = lab_tests(rows).get(call.request.query_params.get("code", ""))
        html = page(
            call.request,
            "trend.html",
            self.ctx.page_key,
            404 if test is None else 200,
            who=call.who,
            patient=patient,
            test=test,
            chart=chart(test) if test else None,
            results_cut=results_cut,
            level_labels=LEVEL_LABELS,
            keep=_kept(call.request.query_params),
            pid=call.request.path_params["pid"],
        )
        return dataclasses.replace(answer, response=html)

    async def _read(
        self, call: Call
    ) -> tuple[Answer, dict[str, Any] | None, list[Row], set[str], bool]:
        """The API's ``$everything`` as this call was decided, as timeline rows."""
        answer = await self.record_api(call)
        bundle = body_of(answer)
        resources = [e["resource"] for e in bundle.get("entry") or []]
        patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
        institutions = await self.ctx.records.institutions()
        rows = sorted(
            (
                row_of(r, institutions)
                for r in resources
                if r.get("resourceType") not in ("Patient", "OperationOutcome")
            ),
            key=lambda row: row.when or "",
            reverse=True,
        )
        withheld, results_cut = withheld_categories(resources)
        return answer, patient, rows, withheld, results_cut


def _kept(query: Any) -> str:
    """The query the page's links carry on: the purpose (ETREAT after break-glass) and the
    record's instant, so that a link reads the record as this page did."""
    kept = {k: query[k] for k in ("purpose", "_at") if query.get(k)}
    return urlencode(kept)


def physician_pages(ctx: ApiContext) -> list[ApiRoute]:
    p = PhysicianPages(ctx)
    return [
        ApiRoute("GET", "/app/", HOME, p.home),
        ApiRoute("POST", "/app/search", SEARCH, p.search),
        ApiRoute("GET", "/app/patients/{pid}", RECORD, p.record),
        ApiRoute("GET", "/app/patients/{pid}/trend", TREND, p.trend),
        *break_glass_pages(ctx),
        *referral_pages(ctx),
        *as_of_pages(ctx),
    ]
