"""The referral side of the read API: ServiceRequest search and read, the status history as
Task, each institution's inbox and outbox, and the county's statistics.

A physician sees the referrals their institution takes part in (it sent them, or they are
addressed to it): that participation is the legal basis recorded for each read. Every request
is audited before anything is sent, like every other read. The statistics hold counts and
durations only, no patient; regulators and admins may read them as well as physicians.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consent.decision import Decision, Reason
from domain.referral import STATES
from exchange.api.fhir import bundle
from exchange.api.gate import Exchange
from exchange.api.referral_fhir import (
    SERVICE_REQUEST_STATUS,
    box_row,
    content_visible,
    service_request,
    task,
)
from exchange.api.responses import Handler, Refused, fhir_response, json_response
from exchange.auth.tokens import Identity
from projections.referral_reader import ReferralReader
from projections.render import dumps

MAX_COUNT = 500


class ReferralRoutes:
    def __init__(self, ex: Exchange, reader: ReferralReader) -> None:
        self.ex = ex
        self.reader = reader

    async def _physician(self, request: Request, request_id: str, action: str) -> Identity:
        ident = await self.ex.authenticate(request, request_id, action)
        if ident.role != "physician":
            raise await self.ex.deny(request, request_id, action, ident, 403, Reason(
                "role.not_permitted", f"the {ident.role} role does not read referrals"))
        purpose = self.ex.purpose(request)
        if purpose != "TREAT":
            raise await self.ex.deny(request, request_id, action, ident, 400, Reason(
                "purpose.missing", "send X-Purpose-Of-Use: TREAT"), purpose=purpose,
                issue_type="required")
        return ident

    async def _invalid(self, request: Request, request_id: str, action: str, ident: Identity,
                       code: str, message: str) -> Refused:
        return await self.ex.deny(request, request_id, action, ident, 400,
                                  Reason(code, message), purpose="TREAT", issue_type="invalid")

    async def _disclose(self, request: Request, request_id: str, action: str,
                        ident: Identity, rows: list[Any], disclosed: list[str]) -> None:
        patients = sorted({str(r["patient_id"]) for r in rows})
        basis = ",".join(f"referral:{r['referral_id']}" for r in rows[:20])
        await self.ex.record(
            request, request_id, action=action, ident=ident,
            patient_id=UUID(patients[0]) if len(patients) == 1 else None, purpose="TREAT",
            decision=Decision(True, [Reason("referral.party", "the requesting institution "
                                            "takes part in the referral(s)")],
                              legal_basis=basis or None),
            disclosed=disclosed, extra={"patients": patients} if len(patients) > 1 else None)

    async def search(self, request: Request, request_id: str) -> Response:
        action = "referral-search"
        ident = await self._physician(request, request_id, action)
        q = request.query_params
        kwargs: dict[str, Any] = {}
        try:
            kwargs = _filters(q)
        except ValueError as exc:
            raise await self._invalid(request, request_id, action, ident, "search.invalid",
                                      str(exc)) from None
        if "patient" in q:
            try:
                asked = UUID(q["patient"].removeprefix("Patient/"))
            except ValueError:
                raise await self._invalid(request, request_id, action, ident, "search.patient",
                                          "patient is a patient id") from None
            root = await self.ex.ctx.records.root(asked)
            kwargs["patients"] = await self.ex.ctx.records.members(root) if root else [asked]
        total, rows = await self.reader.search(party=ident.institution, **kwargs)
        now = self.ex.ctx.clock()
        resources = [service_request(r, now, content_shown=content_visible(
            r, ident.institution, now)) for r in rows]
        disclosed = [f"ServiceRequest/{r['id']}" for r in resources]
        await self._disclose(request, request_id, action, ident, rows, disclosed)
        entries = [(f"urn:uuid:{r['id']}", dumps(r)) for r in resources]
        return fhir_response(bundle(entries, now=now, extra=_paging(
            request, total, kwargs["offset"], len(rows))), request_id=request_id)

    async def _referral(self, request: Request, request_id: str, action: str,
                        ident: Identity, raw: str) -> Any:
        try:
            rid = UUID(raw)
        except ValueError:
            rid = None
        row = await self.reader.get(rid) if rid else None
        if row is None or ident.institution not in (row["from_institution"],
                                                    row["to_institution"]):
            # The same answer whether it does not exist or is another institution's.
            raise await self.ex.deny(request, request_id, action, ident, 404, Reason(
                "referral.not_found", "no referral with this id involves your institution"),
                purpose="TREAT", issue_type="not-found")
        return row

    async def read(self, request: Request, request_id: str) -> Response:
        action = "referral-read"
        ident = await self._physician(request, request_id, action)
        row = await self._referral(request, request_id, action, ident,
                                   request.path_params["rid"])
        now = self.ex.ctx.clock()
        resource = service_request(row, now, content_shown=content_visible(
            row, ident.institution, now))
        await self._disclose(request, request_id, action, ident, [row],
                             [f"ServiceRequest/{resource['id']}"])
        return fhir_response(resource, request_id=request_id)

    async def tasks(self, request: Request, request_id: str) -> Response:
        """``Task?focus=ServiceRequest/<id>``: the referral's status history, oldest first."""
        action = "referral-history"
        ident = await self._physician(request, request_id, action)
        focus = request.query_params.get("focus", "")
        if not focus.startswith("ServiceRequest/"):
            raise await self._invalid(request, request_id, action, ident, "search.focus",
                                      "search Task by focus=ServiceRequest/<id>")
        row = await self._referral(request, request_id, action, ident,
                                   focus.removeprefix("ServiceRequest/"))
        shown = content_visible(row, ident.institution, self.ex.ctx.clock())
        steps = [task(s, row["patient_id"], content_shown=shown)
                 for s in await self.reader.history(row["referral_id"])]
        await self._disclose(request, request_id, action, ident, [row],
                             [f"Task/{t['id']}" for t in steps])
        entries = [(f"urn:uuid:{t['id']}", dumps(t)) for t in steps]
        return fhir_response(bundle(entries, now=self.ex.ctx.clock()), request_id=request_id)

    async def inbox(self, request: Request, request_id: str) -> Response:
        return await self._box(request, request_id, "inbox")

    async def outbox(self, request: Request, request_id: str) -> Response:
        return await self._box(request, request_id, "outbox")

    async def _box(self, request: Request, request_id: str, box: str) -> Response:
        action = f"referral-{box}"
        ident = await self._physician(request, request_id, action)
        try:
            kwargs = _filters(request.query_params)
        except ValueError as exc:
            raise await self._invalid(request, request_id, action, ident, "search.invalid",
                                      str(exc)) from None
        total, rows = await self.reader.search(party=ident.institution, box=box, **kwargs)
        now = self.ex.ctx.clock()
        await self._disclose(request, request_id, action, ident, rows,
                             [f"ServiceRequest/{r['referral_id']}" for r in rows])
        return json_response({"institution": ident.institution, "box": box, "total": total,
                              "offset": kwargs["offset"],
                              "referrals": [box_row(r, now) for r in rows]}, request_id)

    async def statistics(self, request: Request, request_id: str) -> Response:
        action = "referral-statistics"
        ident = await self.ex.authenticate(request, request_id, action)
        if ident.role not in ("physician", "regulator", "admin"):
            raise await self.ex.deny(request, request_id, action, ident, 403, Reason(
                "role.not_permitted", f"the {ident.role} role does not read county statistics"))
        try:
            since = _day(request.query_params.get("from"))
            until = _day(request.query_params.get("to"))
        except ValueError:
            raise await self.ex.deny(request, request_id, action, ident, 400, Reason(
                "search.date", "from and to are dates, e.g. 2026-11-01"),
                issue_type="invalid") from None
        now = self.ex.ctx.clock()
        figures = await self.reader.statistics(since, until, now)
        await self.ex.record(request, request_id, action=action, ident=ident,
                             purpose="HOPERAT", decision=Decision(True, [Reason(
                                 "statistics.aggregate", "counts and durations, no patient")]))
        return json_response({"from": _iso(since), "to": _iso(until), **figures}, request_id)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _day(raw: str | None) -> datetime | None:
    """A date (midnight, China time) or an instant with its offset."""
    if not raw:
        return None
    if len(raw) == 10:
        return datetime.combine(date.fromisoformat(raw), time(), ZoneInfo("Asia/Shanghai"))
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise ValueError("an instant needs its offset")
    return value


FHIR_STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                 "unknown")


def _tokens(raw: str, known: tuple[str, ...], name: str) -> list[str]:
    values = [v for v in raw.split(",") if v]
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise ValueError(f"{name} is one or more of {', '.join(known)}")
    return values


def _filters(q: Any) -> dict[str, Any]:
    """status (FHIR), referral-status (the loop's states), institution, date (ge/gt/le/lt/eq
    prefixes; a date means that whole day in China time), _count, _offset → search arguments."""
    out: dict[str, Any] = {}
    statuses: set[str] | None = None
    if raw := q.get("status"):
        wanted = _tokens(raw, FHIR_STATUSES, "status")
        statuses = {k for k, f in SERVICE_REQUEST_STATUS.items() if f in wanted}
    if raw := q.get("referral-status"):
        states = set(_tokens(raw, STATES, "referral-status"))
        statuses = states if statuses is None else statuses & states
    if statuses is not None:
        out["statuses"] = sorted(statuses)
    if institution := q.get("institution"):
        out["institution"] = institution.removeprefix("Organization/")
    for raw in q.getlist("date") if hasattr(q, "getlist") else []:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in ("ge", "gt", "le", "lt", "eq") \
            else ("eq", raw)
        try:
            start = _day(value)
        except ValueError:
            raise ValueError("date is [ge|gt|le|lt|eq]<date or instant with offset>") from None
        assert start is not None
        # The value names an interval: a whole day, or one instant.
        end = start + (timedelta(days=1) if len(value) == 10 else timedelta(microseconds=1))
        if prefix in ("ge", "eq"):
            out["since"] = start
        elif prefix == "gt":
            out["since"] = end
        if prefix == "lt":
            out["until"] = start
        elif prefix in ("le", "eq"):
            out["until"] = end
    count, offset = q.get("_count", "100"), q.get("_offset", "0")
    if not count.isdigit() or not 0 < int(count) <= MAX_COUNT:
        raise ValueError(f"_count is a number from 1 to {MAX_COUNT}")
    if not offset.isdigit():
        raise ValueError("_offset is a number of results to skip")
    out["limit"], out["offset"] = int(count), int(offset)
    return out


def _paging(request: Request, total: int, offset: int, shown: int) -> dict[str, Any]:
    """Bundle.total (every match) and the self/next links of a page."""
    links = [{"relation": "self", "url": str(request.url)}]
    if offset + shown < total:
        links.append({"relation": "next", "url": str(request.url.include_query_params(
            _offset=offset + shown))})
    return {"total": total, "link": links}


def referral_routes(ex: Exchange, reader: ReferralReader,
                    wrap: Callable[[Handler], Any]) -> list[Route]:
    r = ReferralRoutes(ex, reader)
    return [
        Route("/fhir/ServiceRequest", wrap(r.search)),
        Route("/fhir/ServiceRequest/{rid}", wrap(r.read)),
        Route("/fhir/Task", wrap(r.tasks)),
        Route("/referrals/inbox", wrap(r.inbox)),
        Route("/referrals/outbox", wrap(r.outbox)),
        Route("/referrals/statistics", wrap(r.statistics)),
    ]
