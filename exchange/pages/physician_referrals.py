"""The physician's referrals: their institution's inbox (referred to it) and outbox (sent by
it), each answered from the API's own handler under its access, with the deadlines and
follow-ups that are late marked. A referral shows where it stands, never clinical content."""

from __future__ import annotations

import dataclasses
from typing import Any

from exchange.api.access import Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.referrals import HISTORY, INBOX, OUTBOX, ReferralRoutes
from exchange.pages.calls import asking, body_of
from exchange.pages.i18n import N_
from exchange.pages.physician_record import LEVEL_LABELS
from exchange.pages.render import page

INBOX_PAGE = dataclasses.replace(
    INBOX, action="page.referral-inbox", defaults={"physician": "TREAT"}, page=True
)
OUTBOX_PAGE = dataclasses.replace(
    OUTBOX, action="page.referral-outbox", defaults={"physician": "TREAT"}, page=True
)
DIRECTIONS = {"upward": N_("Upward referral"), "downward": N_("Downward referral")}
URGENCIES = {
    "emergency": N_("Emergency (urgency)"),
    "urgent": N_("Urgent"),
    "routine": N_("Routine"),
}
STATUSES = {
    "requested": N_("Requested"),
    "accepted": N_("Accepted"),
    "rejected": N_("Rejected"),
    "arrived": N_("Arrived"),
    "completed": N_("Completed"),
    "back_referred": N_("Referred back"),
    "followed_up": N_("Followed up"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
}
HISTORY_PAGE = dataclasses.replace(
    HISTORY, action="page.referral-history", defaults={"physician": "TREAT"}, page=True
)
# The loop's steps (domain/referral.py TRANSITIONS, and the exchange's overdue flag).
ACTIONS = {
    "request": N_("Referral requested"),
    "accept": N_("Accepted"),
    "reject": N_("Rejected"),
    "cancel": N_("Cancelled"),
    "expire": N_("Expired: not accepted in time"),
    "arrive": N_("Patient arrived"),
    "complete": N_("Treatment completed"),
    "back_refer": N_("Referred back down"),
    "follow_up": N_("Followed up"),
    "mark_overdue": N_("Follow-up overdue"),
}
OUTPUTS = {
    "diagnosis": N_("Diagnosis"),
    "results": N_("Results"),
    "treatment": N_("Treatment"),
    "follow-up plan": N_("Follow-up plan"),
    "department": N_("Department"),
    "appointment": N_("Appointment"),
}
TITLES = {"inbox": N_("Referrals received"), "outbox": N_("Referrals sent")}


class ReferralPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        api = ReferralRoutes(ctx)
        self.api = {"inbox": api.inbox, "outbox": api.outbox}
        self.read, self.tasks = api.read, api.tasks

    async def inbox(self, call: Call) -> Answer:
        return await self._box(call, "inbox")

    async def outbox(self, call: Call) -> Answer:
        return await self._box(call, "outbox")

    async def _box(self, call: Call, box: str) -> Answer:
        answer = await self.api[box](call)
        found = body_of(answer)
        institutions = await self.ctx.records.institutions()
        html = page(
            call.request,
            "referrals.html",
            self.ctx.page_key,
            who=call.who,
            box=box,
            title=TITLES[box],
            total=found.get("total", 0),
            referrals=found.get("referrals") or [],
            institutions=institutions,
            level_labels=LEVEL_LABELS,
            directions=DIRECTIONS,
            urgencies=URGENCIES,
            statuses=STATUSES,
        )
        return dataclasses.replace(answer, response=html)

    async def history(self, call: Call) -> Answer:
        """One referral: the request (the API's ServiceRequest read) and every step of it
        (the API's Task search by focus), oldest first, each decided as the API decides it."""
        rid = call.request.path_params["rid"]
        requested = await self.read(call)
        steps = await self.tasks(asking(call, [("focus", f"ServiceRequest/{rid}")]))
        request = body_of(requested)
        tasks = [e["resource"] for e in body_of(steps).get("entry") or []]
        html = page(
            call.request,
            "referral_history.html",
            self.ctx.page_key,
            sr=request,
            extension={_tail(e["url"]): _value(e) for e in request.get("extension") or []},
            steps=[_step(t) for t in tasks],
            institutions=await self.ctx.records.institutions(),
            level_labels=LEVEL_LABELS,
            directions=DIRECTIONS,
            urgencies=URGENCIES,
            statuses=STATUSES,
            actions=ACTIONS,
            outputs=OUTPUTS,
        )
        # The page discloses the request and its steps: both are in its audit record.
        return dataclasses.replace(
            steps, response=html, disclosed=[*requested.disclosed, *steps.disclosed]
        )


def _tail(url: str) -> str:
    """An extension's name: the last part of its URL or URN (the exchange's are URNs)."""
    return url.replace("/", ":").rsplit(":", 1)[-1]


def _value(extension: dict[str, Any]) -> Any:
    return next(v for k, v in extension.items() if k.startswith("value"))


def _step(task: dict[str, Any]) -> dict[str, Any]:
    """One step of the history from the API's Task: who, when, what, and why."""
    owner = task.get("owner") or {}
    outputs = [
        (
            o["type"]["text"],
            o.get("valueString")
            or "、".join(
                c.get("display") or c.get("code", "")
                for c in o.get("valueCodeableConcept", {}).get("coding") or []
            ),
        )
        for o in task.get("output") or []
    ]
    return {
        "at": task.get("authoredOn"),
        "action": task["code"]["coding"][0]["code"],
        "institution": owner.get("reference", "").removeprefix("Organization/") or None,
        "by": (task.get("requester") or {}).get("display", ""),
        "reason": (task.get("statusReason") or {}).get("text", ""),
        "notes": [n["text"] for n in task.get("note") or []],
        "outputs": outputs,
        "withheld": bool(task.get("meta", {}).get("security")),
    }


def referral_pages(ctx: ApiContext) -> list[ApiRoute]:
    r = ReferralPages(ctx)
    return [
        ApiRoute("GET", "/app/referrals/inbox", INBOX_PAGE, r.inbox),
        ApiRoute("GET", "/app/referrals/outbox", OUTBOX_PAGE, r.outbox),
        ApiRoute("GET", "/app/referrals/{rid}", HISTORY_PAGE, r.history),
    ]
