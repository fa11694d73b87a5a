"""The physician's referrals: their institution's inbox (referred to it) and outbox (sent by
it), each answered from the API's own handler under its access, with the deadlines and
follow-ups that are late marked. A referral shows where it stands, never clinical content."""

from __future__ import annotations

import dataclasses
import json

from exchange.api.access import Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.referrals import INBOX, OUTBOX, ReferralRoutes
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
TITLES = {"inbox": N_("Referrals received"), "outbox": N_("Referrals sent")}


class ReferralPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        api = ReferralRoutes(ctx)
        self.api = {"inbox": api.inbox, "outbox": api.outbox}

    async def inbox(self, call: Call) -> Answer:
        return await self._box(call, "inbox")

    async def outbox(self, call: Call) -> Answer:
        return await self._box(call, "outbox")

    async def _box(self, call: Call, box: str) -> Answer:
        answer = await self.api[box](call)
        found = json.loads(bytes(answer.response.body))
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


def referral_pages(ctx: ApiContext) -> list[ApiRoute]:
    r = ReferralPages(ctx)
    return [
        ApiRoute("GET", "/app/referrals/inbox", INBOX_PAGE, r.inbox),
        ApiRoute("GET", "/app/referrals/outbox", OUTBOX_PAGE, r.outbox),
    ]
