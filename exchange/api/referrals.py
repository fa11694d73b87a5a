"""The referral side of the read API: ServiceRequest search and read, the status history as
Task, each institution's inbox and outbox, and the county's statistics.

A physician sees the referrals their institution takes part in (it sent them, or they are
addressed to it): where each stands and where it goes, on the legal basis of that
participation. What they see of each one's clinical content is decided per referral by
consent/referrals.py (``referral_access``): a seal, a withdrawn consent, the end of a care
relationship withhold it. Every request is audited, with those decisions, before anything is
sent, like every other read. The statistics hold counts and durations only, no patient;
regulators and admins may read them as well as physicians.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from consent.decision import Decision, Reason
from domain.referral import SENDER, STATES
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.fhir import bundle
from exchange.api.referral_access import Views, content_decision, content_views
from exchange.api.referral_fhir import (
    SERVICE_REQUEST_STATUS,
    author,
    box_row,
    service_request,
    task,
)
from exchange.api.responses import Refused, fhir_response, json_response
from projections.render import dumps

MAX_COUNT = 500


def _physician(action: str) -> Access:
    return Access(
        action,
        roles=frozenset({"physician"}),
        refused_role="the {role} role does not read referrals",
        purposes=frozenset({"TREAT"}),
        refused_purpose="send X-Purpose-Of-Use: TREAT",
    )


SEARCH, READ, HISTORY = (
    _physician("referral-search"),
    _physician("referral-read"),
    _physician("referral-history"),
)
INBOX, OUTBOX = _physician("referral-inbox"), _physician("referral-outbox")
STATISTICS = Access(
    "referral-statistics",
    roles=frozenset({"physician", "regulator", "admin"}),
    refused_role="the {role} role does not read county statistics",
)


def _invalid(code: str, message: str) -> Refused:
    return Refused(400, code, message, "invalid")


def _disclosing(
    response: Response,
    rows: Sequence[Any],
    disclosed: list[str],
    views: Views | None = None,
    policy: str = "",
) -> Answer:
    """A referral read's answer: the referrals' institutions take part in them (the legal
    basis), with the decision on each one's content; one patient is the record's, several
    are listed."""
    patients = sorted({str(r["patient_id"]) for r in rows})
    decision, content = content_decision(rows, views, policy)
    return Answer(
        response,
        decision,
        patient_id=UUID(patients[0]) if len(patients) == 1 else None,
        disclosed=disclosed,
        extra={**content, **({"patients": patients} if len(patients) > 1 else {})} or None,
    )


class ReferralRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx  # its readers are taken when a request comes, not when routes are built

    async def search(self, call: Call) -> Answer:
        q = call.request.query_params
        kwargs: dict[str, Any] = {}
        try:
            kwargs = _filters(q)
        except ValueError as exc:
            raise _invalid("search.invalid", str(exc)) from None
        if "patient" in q:
            try:
                asked = UUID(q["patient"].removeprefix("Patient/"))
            except ValueError:
                raise _invalid("search.patient", "patient is a patient id") from None
            root = await self.ctx.records.root(asked)
            kwargs["patients"] = await self.ctx.records.members(root) if root else [asked]
        institution = call.who.institution
        total, rows = await self.ctx.referrals.search(party=institution, **kwargs)
        now = call.now
        views = await content_views(self.ctx, call, rows)
        resources = [
            service_request(r, now, content_shown=SENDER in views[r["referral_id"]][0].shown)
            for r in rows
        ]
        entries = [(f"urn:uuid:{r['id']}", dumps(r)) for r in resources]
        return _disclosing(
            fhir_response(
                bundle(
                    entries,
                    now=now,
                    extra=_paging(call.request, total, kwargs["offset"], len(rows)),
                ),
                request_id=call.request_id,
            ),
            rows,
            [f"ServiceRequest/{r['id']}" for r in resources],
            views,
            self.ctx.policy.fingerprint(),
        )

    async def _referral(self, call: Call, raw: str) -> Any:
        try:
            rid = UUID(raw)
        except ValueError:
            rid = None
        row = await self.ctx.referrals.get(rid) if rid else None
        if row is None or call.who.institution not in (
            row["from_institution"],
            row["to_institution"],
        ):
            # The same answer whether it does not exist or is another institution's.
            raise Refused(
                404,
                "referral.not_found",
                "no referral with this id involves your institution",
                "not-found",
            )
        return row

    async def read(self, call: Call) -> Answer:
        row = await self._referral(call, call.request.path_params["rid"])
        views = await content_views(self.ctx, call, [row])
        shown = views[row["referral_id"]][0].shown
        resource = service_request(row, call.now, content_shown=SENDER in shown)
        return _disclosing(
            fhir_response(resource, request_id=call.request_id),
            [row],
            [f"ServiceRequest/{resource['id']}"],
            views,
            self.ctx.policy.fingerprint(),
        )

    async def tasks(self, call: Call) -> Answer:
        """``Task?focus=ServiceRequest/<id>``: the referral's status history, oldest first."""
        focus = call.request.query_params.get("focus", "")
        if not focus.startswith("ServiceRequest/"):
            raise _invalid("search.focus", "search Task by focus=ServiceRequest/<id>")
        row = await self._referral(call, focus.removeprefix("ServiceRequest/"))
        views = await content_views(self.ctx, call, [row])
        shown = views[row["referral_id"]][0].shown
        # Each step shows its details if its author's writing is shown (the exchange's own
        # steps, an expiry or an overdue flag, hold none).
        steps = [
            task(
                s, row["patient_id"], content_shown=author(row, s["institution"]) in {*shown, None}
            )
            for s in await self.ctx.referrals.history(row["referral_id"])
        ]
        entries = [(f"urn:uuid:{t['id']}", dumps(t)) for t in steps]
        return _disclosing(
            fhir_response(bundle(entries, now=call.now), request_id=call.request_id),
            [row],
            [f"Task/{t['id']}" for t in steps],
            views,
            self.ctx.policy.fingerprint(),
        )

    async def inbox(self, call: Call) -> Answer:
        return await self._box(call, "inbox")

    async def outbox(self, call: Call) -> Answer:
        return await self._box(call, "outbox")

    async def _box(self, call: Call, box: str) -> Answer:
        try:
            kwargs = _filters(call.request.query_params)
        except ValueError as exc:
            raise _invalid("search.invalid", str(exc)) from None
        institution = call.who.institution
        total, rows = await self.ctx.referrals.search(party=institution, box=box, **kwargs)
        return _disclosing(
            json_response(
                {
                    "institution": institution,
                    "box": box,
                    "total": total,
                    "offset": kwargs["offset"],
                    "referrals": [box_row(r, call.now) for r in rows],
                },
                call.request_id,
            ),
            rows,
            [f"ServiceRequest/{r['referral_id']}" for r in rows],
        )

    async def statistics(self, call: Call) -> Answer:
        try:
            since = _day(call.request.query_params.get("from"))
            until = _day(call.request.query_params.get("to"))
        except ValueError:
            raise _invalid("search.date", "from and to are dates, e.g. 2026-11-01") from None
        figures = await self.ctx.referrals.statistics(since, until, call.now)
        return Answer(
            json_response({"from": _iso(since), "to": _iso(until), **figures}, call.request_id),
            Decision(True, [Reason("statistics.aggregate", "counts and durations, no patient")]),
            purpose="HOPERAT",
        )


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


FHIR_STATUSES = (
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
)


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
        prefix, value = (
            (raw[:2], raw[2:]) if raw[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", raw)
        )
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
        links.append(
            {
                "relation": "next",
                "url": str(request.url.include_query_params(_offset=offset + shown)),
            }
        )
    return {"total": total, "link": links}


def referral_routes(ctx: ApiContext) -> list[ApiRoute]:
    r = ReferralRoutes(ctx)
    return [
        ApiRoute("GET", "/fhir/ServiceRequest", SEARCH, r.search),
        ApiRoute("GET", "/fhir/ServiceRequest/{rid}", READ, r.read),
        ApiRoute("GET", "/fhir/Task", HISTORY, r.tasks),
        ApiRoute("GET", "/referrals/inbox", INBOX, r.inbox),
        ApiRoute("GET", "/referrals/outbox", OUTBOX, r.outbox),
        ApiRoute("GET", "/referrals/statistics", STATISTICS, r.statistics),
    ]
