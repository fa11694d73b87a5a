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
from exchange.fhir import bundle
from exchange.http import Exchange, Handler, Refused, fhir_response
from exchange.referral_fhir import SERVICE_REQUEST_STATUS, box_row, service_request, task
from exchange.regulator import json_response
from exchange.tokens import Identity
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
        purpose = self.ex._purpose(request)
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
        rows = await self.reader.search(party=ident.institution, **kwargs)
        now = self.ex.ctx.clock()
        resources = [service_request(r, now) for r in rows]
        disclosed = [f"ServiceRequest/{r['id']}" for r in resources]
        await self._disclose(request, request_id, action, ident, rows, disclosed)
        entries = [(f"urn:uuid:{r['id']}", dumps(r)) for r in resources]
        return fhir_response(bundle(entries, now=now), request_id=request_id)

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
        resource = service_request(row, self.ex.ctx.clock())
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
        steps = [task(s, row["patient_id"]) for s in await self.reader.history(
            row["referral_id"])]
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
        rows = await self.reader.search(party=ident.institution, box=box, **kwargs)
        now = self.ex.ctx.clock()
        await self._disclose(request, request_id, action, ident, rows,
                             [f"ServiceRequest/{r['referral_id']}" for r in rows])
        return json_response({"institution": ident.institution, "box": box,
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


def _filters(q: Any) -> dict[str, Any]:
    """status, institution, date (ge/gt/le/lt/eq prefixes), _count → search arguments."""
    out: dict[str, Any] = {}
    if status := q.get("status"):
        statuses = [s for v in status.split(",") for s in (
            [v] if v in STATES else [k for k, f in SERVICE_REQUEST_STATUS.items() if f == v])]
        if not statuses:
            raise ValueError(f"status is one of {', '.join(STATES)} (or active, completed, "
                             "revoked)")
        out["statuses"] = statuses
    if institution := q.get("institution"):
        out["institution"] = institution.removeprefix("Organization/")
    for raw in q.getlist("date") if hasattr(q, "getlist") else []:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in ("ge", "gt", "le", "lt", "eq") \
            else ("eq", raw)
        try:
            instant = _day(value)
        except ValueError:
            raise ValueError("date is [ge|gt|le|lt|eq]<date or instant>") from None
        assert instant is not None
        span = _next_day(instant) if len(value) == 10 else instant
        if prefix in ("ge", "eq"):
            out["since"] = instant
        if prefix == "gt":
            out["since"] = span
        if prefix in ("lt",):
            out["until"] = instant
        if prefix in ("le", "eq"):
            out["until"] = span
    count = q.get("_count", "100")
    if not count.isdigit() or not 0 < int(count) <= MAX_COUNT:
        raise ValueError(f"_count is a number from 1 to {MAX_COUNT}")
    out["limit"] = int(count)
    return out


def _next_day(instant: datetime) -> datetime:
    return instant + timedelta(days=1)


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
