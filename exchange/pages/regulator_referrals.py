"""The regulator's referral statistics as charts: monthly upward and downward referrals, the
time receiving institutions took to accept, and the follow-ups after a downward referral,
each as a server-rendered SVG bar chart with a table of the same numbers. Answered from the
API's ``/referrals/statistics`` handler under its access, so decided and audited as it is;
the figures are counts and durations, no patient."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from exchange.api.access import Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.referrals import STATISTICS, ReferralRoutes
from exchange.pages.calls import asking, body_of
from exchange.pages.i18n import N_
from exchange.pages.regulator_charts import bar_chart
from exchange.pages.render import page

STATISTICS_PAGE = dataclasses.replace(
    STATISTICS, action="page.referral-statistics", roles=frozenset({"regulator"}), page=True
)
DIRECTIONS = (("upward", N_("Upward referrals")), ("downward", N_("Downward referrals")))
# The follow-up figures in the order a regulator reads them: back-referred, then what came of it.
FOLLOW_UP = (
    ("back_referred", N_("Referred back down")),
    ("due", N_("Follow-ups due")),
    ("followed_up", N_("Followed up")),
    ("on_time", N_("Followed up on time")),
    ("overdue_open", N_("Overdue, not followed up")),
)


def monthly(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's per-month, per-pair rows summed per month and direction, oldest first."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {d: 0 for d, _ in DIRECTIONS})
    for row in rows:
        if row["direction"] in counts[row["month"]]:
            counts[row["month"]][row["direction"]] += int(row["n"])
    return [{"month": m, **counts[m]} for m in sorted(counts)]


class StatisticsPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.api = ReferralRoutes(ctx)

    async def statistics(self, call: Call) -> Answer:
        q = call.request.query_params
        window = [(n, q[n].strip()) for n in ("from", "to") if q.get(n, "").strip()]
        answer = await self.api.statistics(asking(call, window))
        figures = body_of(answer)
        months = monthly(figures.get("by_month") or [])
        accept = figures.get("time_to_accept_hours") or []
        by_receiver = [r for r in accept if r["to_institution"] != "*"]
        follow = figures.get("follow_up") or {}
        institutions = await self.ctx.records.institutions()
        html = page(
            call.request,
            "regulator_referrals.html",
            self.ctx.page_key,
            q=q,
            directions=DIRECTIONS,
            months=months,
            months_chart=bar_chart(
                [(m["month"], [float(m[d]) for d, _ in DIRECTIONS]) for m in months]
            ),
            accept=accept,
            accept_chart=bar_chart(
                [
                    (r["to_institution"], [float(r["median"] or 0), float(r["p90"] or 0)])
                    for r in by_receiver
                ]
            ),
            follow=follow,
            follow_up=FOLLOW_UP,
            follow_names=dict(FOLLOW_UP),
            follow_chart=bar_chart([(k, [float(follow.get(k) or 0)]) for k, _ in FOLLOW_UP])
            if follow.get("back_referred")
            else None,
            place={code: known[0] for code, known in institutions.items()},
        )
        return dataclasses.replace(answer, response=html)


def statistics_pages(ctx: ApiContext) -> list[ApiRoute]:
    s = StatisticsPages(ctx)
    return [ApiRoute("GET", "/app/audit/referrals", STATISTICS_PAGE, s.statistics)]
