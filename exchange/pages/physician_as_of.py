"""The record "as it stood": the record page's form asks for a day and a time in Asia/Shanghai,
and this route turns them into the gate's ``_at=`` (an instant with its offset), so that the
record page itself is decided and audited as of that instant, as ``$everything?_at=`` is. It
reads nothing: a redirect, named for the patient it was asked about."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from starlette.responses import RedirectResponse

from consent.decision import Decision, Reason
from exchange.api.access import PATH_PATIENT, Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused
from exchange.pages.i18n import N_
from exchange.pages.render import SHANGHAI

AS_OF = Access(
    "page.as-it-stood",
    roles=frozenset({"physician", "nurse", "patient"}),
    refused_role="the {role} role does not read clinical records",
    patient=PATH_PATIENT,
    page=True,
)
BAD_TIME = N_("give a day (YYYY-MM-DD) and a time (HH:MM or HH:MM:SS) that have already passed")


def instant_of(day: str, time: str, now: datetime) -> datetime:
    """The instant a day and a time (Asia/Shanghai) name, or Refused saying what to give; a
    day without a time is its end (today's: now)."""
    given = time.strip()[:8]
    try:
        at = datetime.fromisoformat(f"{day.strip()}T{given or '23:59:59'}")
    except ValueError:
        raise Refused(400, "page.at", BAD_TIME, "invalid") from None
    at = at.replace(tzinfo=SHANGHAI)
    if at > now and not given and at.date() == now.astimezone(SHANGHAI).date():
        return now.astimezone(SHANGHAI)
    if at > now:
        raise Refused(400, "page.at", BAD_TIME, "invalid")
    return at


async def as_it_stood(call: Call) -> Answer:
    query = call.request.query_params
    at = instant_of(query.get("day", ""), query.get("time", ""), call.now)
    kept = {"_at": at.isoformat(timespec="seconds")}
    if query.get("purpose") == "ETREAT":  # the emergency read goes on as one
        kept["purpose"] = "ETREAT"
    pid = call.request.path_params["pid"]
    return Answer(
        RedirectResponse(f"/app/patients/{pid}?{urlencode(kept)}", 303),
        Decision(True, [Reason("page.as-it-stood", "a redirect: no patient data")]),
    )


def as_of_pages(ctx: ApiContext) -> list[ApiRoute]:
    del ctx  # nothing of the exchange is read here
    return [ApiRoute("GET", "/app/patients/{pid}/as-it-stood", AS_OF, as_it_stood)]
