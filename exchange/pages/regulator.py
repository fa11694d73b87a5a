"""The regulator's console: the audit log's state with a server-side consistency check, the
audit search (and its CSV export), the alerts and the break-glass review queue. Each page is
declared with the access of its API route (``page=True``) and answers from that route's own
handler in ``exchange.api.regulator``, so it is decided and audited exactly as the API is."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse

from audit.checkpoint import hash_of
from audit.merkle import hasher_named, verify_consistency
from consent.decision import Decision, Reason
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.regulator import (
    ALERTS,
    AUDIT_READ,
    BREACH,
    EXPORT,
    HEAD,
    PROOF,
    QUEUE,
    REVIEW,
    Regulator,
)
from exchange.api.responses import Refused
from exchange.pages.calls import asking, body_of
from exchange.pages.i18n import N_
from exchange.pages.render import SHANGHAI, page
from exchange.pages.session import checked_form


def _page(access: Access, action: str) -> Access:
    return dataclasses.replace(access, action=action, page=True)


CONSOLE = _page(HEAD, "page.audit-head")
CHECK = _page(PROOF, "page.audit-proof")
SEARCH = dataclasses.replace(
    AUDIT_READ, action="page.audit-search", roles=frozenset({"regulator"}), page=True
)
CSV = _page(EXPORT, "page.audit-export")
BREACH_PAGE = _page(BREACH, "page.breach-scope")
ALERTS_PAGE = _page(ALERTS, "page.audit-alerts")
QUEUE_PAGE = _page(QUEUE, "page.break-glass-queue")
# A review from the page is the review itself: recorded under the API's action, which is what
# takes a grant off the queue (audit.postgres.AuditStore.unreviewed_break_glass).
REVIEW_PAGE = dataclasses.replace(REVIEW, page=True)

# The search form's fields that are the API's own parameters, passed on when filled in.
PASSED = ("patient", "agent", "institution", "purpose", "subtype", "outcome", "break-glass")
PAGE_SIZE = 50
OUTCOMES = (("justified", N_("Justified")), ("unjustified", N_("Unjustified")))
# The alerts' codes (consent/decision.py, exchange/api/patients.py) as a regulator reads them.
ALERT_NAMES = {
    "break_glass.granted": N_("Break-glass granted"),
    "break_glass.rate_limited": N_("Break-glass refused past the rate"),
    "sealed-record": N_("Sealed record read by someone it does not name"),
    "sealed-record.break-glass": N_("Sealed record read under break-glass"),
}


def api_query(request: Request, *, paged: bool) -> list[tuple[str, str]]:
    """The API's parameters from the search form: empty fields left out (an empty field is
    no filter, not a filter for the empty value), the date range as ``date=ge``/``date=le``."""
    q = request.query_params
    pairs = [(name, q[name].strip()) for name in PASSED if q.get(name, "").strip()]
    if q.get("from", "").strip():
        pairs.append(("date", "ge" + q["from"].strip()))
    if q.get("to", "").strip():
        pairs.append(("date", "le" + q["to"].strip()))
    if paged:
        pairs += [("_count", str(PAGE_SIZE)), ("_offset", q.get("_offset", "0") or "0")]
    return pairs


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    """One line of the audit table from the API's AuditEvent (IHE BALP shape)."""
    agent = (event.get("agent") or [{}])[0]
    purpose = (event.get("purposeOfEvent") or [{"coding": [{}]}])[0]["coding"][0]
    patients = [
        e["what"]["reference"].removeprefix("Patient/")
        for e in event.get("entity") or []
        if str(e.get("what", {}).get("reference", "")).startswith("Patient/")
    ]
    return {
        "seq": event.get("id"),
        "recorded": event.get("recorded"),
        "action": (event.get("subtype") or [{}])[0].get("code", ""),
        "permitted": event.get("outcome") == "0",
        "reasons": event.get("outcomeDesc", ""),
        "person": agent.get("who", {}).get("identifier", {}).get("value", ""),
        "role": (agent.get("role") or [{}])[0].get("text", ""),
        "institution": agent.get("location", {}).get("identifier", {}).get("value", ""),
        "purpose": purpose.get("code", ""),
        "patients": patients,
        "break_glass": bool(event.get("extension")),
    }


class RegulatorPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.api = Regulator(ctx)

    async def _head(self, call: Call) -> tuple[Answer, dict[str, Any] | None]:
        """The API's latest signed head; before any is signed, a page that says so (a state
        of the log, not an error of the request)."""
        try:
            answer = await self.api.head(asking(call, []))
        except Refused as refused:
            if refused.code != "audit.no_head":
                raise
            html = page(call.request, "regulator_console.html", self.ctx.page_key, head=None)
            return Answer(
                html,
                Decision(True, [Reason("regulator.audit", "no tree head signed yet")]),
                purpose="HOPERAT",
            ), None
        return answer, body_of(answer)

    async def console(self, call: Call) -> Answer:
        """The log's state: the latest signed head, and the form that checks it."""
        answer, head = await self._head(call)
        if head is None:
            return answer
        html = page(call.request, "regulator_console.html", self.ctx.page_key, head=head)
        return dataclasses.replace(answer, response=html)

    async def check(self, call: Call) -> Answer:
        """The consistency proof from the head the regulator was shown (its size and root, as
        the console page gave them) to the latest signed head, fetched from the API's proof
        handler and verified here (RFC 9162 §2.1.4.2): the log the regulator saw has only
        grown since, nothing in it rewritten."""
        q = call.request.query_params
        try:
            first = int(q.get("size", ""))
            root = base64.b64decode(q.get("root", ""), validate=True)
        except (ValueError, binascii.Error):
            raise Refused(
                400, "page.check_params", N_("the check needs the size and root the page showed")
            ) from None
        answer, head = await self._head(call)
        if head is None:
            return answer
        latest = int(head["size"])
        if not 0 < first <= latest:
            raise Refused(
                400, "page.check_params", N_("the check needs the size and root the page showed")
            )
        proved = await self.api.consistency(
            asking(call, [("first", str(first)), ("second", str(latest))])
        )
        proof = [base64.b64decode(h) for h in body_of(proved)["proof"]]
        latest_root = base64.b64decode(head["root"])
        # With the hash the signed head names (its origin): SHA-256, or SM3 under gm.
        hasher = hasher_named(hash_of(str(head["checkpoint"]).split("\n", 1)[0]))
        consistent = verify_consistency(hasher, first, latest, proof, root, latest_root)
        html = page(
            call.request,
            "regulator_console.html",
            self.ctx.page_key,
            head=head,
            checked={"first": first, "consistent": consistent, "steps": len(proof)},
        )
        return dataclasses.replace(proved, response=html)

    async def search(self, call: Call) -> Answer:
        """The audit search: the API's filters as a GET form, the results as a table."""
        pairs = api_query(call.request, paged=True)
        searched = bool(call.request.query_params)
        answer = await self.api.audit_events(asking(call, pairs))
        found = body_of(answer)
        rows = [_event_row(e["resource"]) for e in found.get("entry") or []]
        offset = int(dict(pairs)["_offset"])
        html = page(
            call.request,
            "regulator_search.html",
            self.ctx.page_key,
            q=call.request.query_params,
            rows=rows,
            searched=searched,
            total=found.get("total", 0),
            first=offset + 1,
            last=offset + len(rows),
            export=urlencode(api_query(call.request, paged=False)),
            filters=urlencode(
                [(k, v) for k, v in call.request.query_params.multi_items() if k != "_offset"]
            ),
            next_offset=offset + PAGE_SIZE,
            page_size=PAGE_SIZE,
        )
        return dataclasses.replace(answer, response=html)

    async def export(self, call: Call) -> Answer:
        """The API's CSV export with the search form's filters, reachable by the session."""
        return await self.api.export_csv(asking(call, api_query(call.request, paged=False)))

    async def breach(self, call: Call) -> Answer:
        """Breach scope: every patient and category a person (or one token) was given over
        whole days in Asia/Shanghai. Before anything is asked, only the form."""
        q = call.request.query_params
        who = [(n, q[n].strip()) for n in ("agent", "token") if q.get(n, "").strip()]
        if not who:
            html = page(call.request, "regulator_breach.html", self.ctx.page_key, q=q, scope=None)
            return Answer(
                html,
                Decision(True, [Reason("regulator.audit", "the breach-scope form: no data")]),
                purpose="HOPERAT",
            )
        pairs = [*who, ("start", _day(q.get("from", ""), 0)), ("end", _day(q.get("to", ""), 1))]
        answer = await self.api.breach_scope(asking(call, pairs))
        html = page(
            call.request, "regulator_breach.html", self.ctx.page_key, q=q, scope=body_of(answer)
        )
        return dataclasses.replace(answer, response=html)

    async def alerts(self, call: Call) -> Answer:
        answer = await self.api.alerts(asking(call, []))
        html = page(
            call.request,
            "regulator_alerts.html",
            self.ctx.page_key,
            alerts=list(reversed(body_of(answer)["alerts"])),  # newest first
            alert_names=ALERT_NAMES,
        )
        return dataclasses.replace(answer, response=html)

    async def queue(self, call: Call) -> Answer:
        answer = await self.api.review_queue(asking(call, []))
        reviewed = call.request.query_params.get("reviewed", "")
        html = page(
            call.request,
            "regulator_queue.html",
            self.ctx.page_key,
            pending=body_of(answer)["pending"],
            outcomes=OUTCOMES,
            reviewed=reviewed if reviewed.isdigit() else "",
        )
        return dataclasses.replace(answer, response=html)

    async def review(self, call: Call) -> Answer:
        """A review posted with the session's CSRF token, given to the API's review handler
        as the JSON it takes."""
        form = await checked_form(self.ctx.page_key, call.request)
        body = {"outcome": form.get("outcome", ""), "comment": form.get("comment", "")}
        call.request._body = json.dumps(body).encode()  # the API handler reads it as its own
        answer = await self.api.review(call)
        seq = body_of(answer)["reviewed_seq"]
        return dataclasses.replace(
            answer, response=RedirectResponse(f"/app/audit/break-glass?reviewed={seq}", 303)
        )


def _day(text: str, after: int) -> str:
    """The start of a day (``after``: of the day after it) in Asia/Shanghai, as the API's
    instants take it; a malformed date is passed on for the API to refuse by name."""
    try:
        day = date.fromisoformat(text.strip()) + timedelta(days=after)
    except ValueError:
        return text
    return datetime.combine(day, time.min, SHANGHAI).isoformat()


def regulator_pages(ctx: ApiContext) -> list[ApiRoute]:
    p = RegulatorPages(ctx)
    return [
        ApiRoute("GET", "/app/audit/", CONSOLE, p.console),
        ApiRoute("GET", "/app/audit/check", CHECK, p.check),
        ApiRoute("GET", "/app/audit/events", SEARCH, p.search),
        ApiRoute("GET", "/app/audit/export.csv", CSV, p.export),
        ApiRoute("GET", "/app/audit/breach-scope", BREACH_PAGE, p.breach),
        ApiRoute("GET", "/app/audit/alerts", ALERTS_PAGE, p.alerts),
        ApiRoute("GET", "/app/audit/break-glass", QUEUE_PAGE, p.queue),
        ApiRoute("POST", "/app/audit/break-glass/{seq:int}", REVIEW_PAGE, p.review),
    ]
