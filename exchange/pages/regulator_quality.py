"""The consortium's data quality, institution by institution, as a county's information centre
checks it every morning: who needs attention first (an institution silent for a day, one whose
refusals run high, one that never sent, one whose village edge node's clock runs ahead of the
exchange's), then a table of every institution — submissions accepted and refused, the top
problem codes, items by kind, time since its last submission, its edge clock — and the
county's submissions day by day as a chart. Answered from the API's
``/audit/data-quality`` handler under its access, so decided and audited as it is."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from domain.institution import CARE_LEVELS
from exchange.api.access import Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.data_quality import DATA_QUALITY, WINDOWS, DataQuality
from exchange.pages.calls import asking, body_of
from exchange.pages.i18n import N_
from exchange.pages.physician_record import LEVEL_LABELS
from exchange.pages.regulator_charts import bar_chart
from exchange.pages.render import page

QUALITY_PAGE = dataclasses.replace(
    DATA_QUALITY, action="page.data-quality", roles=frozenset({"regulator"}), page=True
)
# An institution that sends nothing for a day has lost its link, its adapter or its interface.
SILENT_AFTER = timedelta(hours=24)
# A share of refused submissions above which someone should call the institution's IT.
HIGH_REFUSALS = 0.05
# The member institutions send every day; the exchange's own desks (the patients' portal, the
# identity steward's, the regulator's) only when a person acts there, so their silence says
# nothing and they are listed apart.
MEMBERS = frozenset(CARE_LEVELS)
TOP_CODES = 3
WINDOW_LABELS = {
    1: N_("Today"),
    7: N_("Last 7 days"),
    30: N_("Last 30 days"),
    90: N_("Last 90 days"),
}
KIND_LABELS = {
    "encounter": N_("Visits"),
    "condition": N_("Diagnoses"),
    "observation": N_("Observations"),
    "medication_request": N_("Prescriptions"),
    "medication_dispense": N_("Dispensings"),
    "procedure": N_("Procedures"),
    "immunization": N_("Immunizations"),
    "allergy": N_("Allergies"),
    "document": N_("Documents"),
    "patient": N_("Patient details"),
    "consent": N_("Consents"),
    "retract": N_("Retractions"),
    "merge": N_("Merges"),
    "unmerge": N_("Unmerges"),
    "consent_withdrawal": N_("Consent withdrawals"),
    "consent_confirmation": N_("Consent confirmations"),
    "guardian": N_("Guardians"),
    "care_contract": N_("Family doctor contracts"),
    "seal": N_("Seals"),
    "unseal": N_("Seals lifted"),
    "referral": N_("Referral requests"),
    "referral_action": N_("Referral actions"),
}
ATTENTION = {
    "never": N_("Has never sent a submission"),
    "silent": N_("Nothing sent for more than a day"),
    "refusals": N_("More than 5%% of its submissions refused"),
    "clock": N_("Its edge node's clock is more than 5 minutes off: set the clinic's clock right"),
    "clock_was": N_("Its edge node's clock was more than 5 minutes off in this window"),
}


def since(last: str | None, now: datetime) -> timedelta | None:
    return now - datetime.fromisoformat(last) if last else None


def attention(row: dict[str, Any], now: datetime) -> list[str]:
    """Why an institution needs looking at this morning (keys of ``ATTENTION``), most urgent
    first; none for one that is well."""
    why = []
    quiet = since(row["last_submission_at"], now)
    if row["level"] in MEMBERS:
        if quiet is None:
            why.append("never")
        elif quiet > SILENT_AFTER:
            why.append("silent")
    answered = row["accepted"] + row["rejected"]
    if answered and row["rejected"] / answered > HIGH_REFUSALS:
        why.append("refusals")
    if (clock := row["edge_clock"]) is not None:
        if clock["clock_skew_s"] is not None:
            why.append("clock")
        elif clock["flagged_in_window"]:
            why.append("clock_was")
    return why


def clock_state(clock: dict[str, Any] | None) -> tuple[str, dict[str, int]] | None:
    """An edge clock at its last measurement, as a message id and its numbers: ahead or
    behind by so many minutes when flagged, else in step; None without an edge node."""
    if clock is None:
        return None
    if (skew := clock["clock_skew_s"]) is None:
        return N_("in step"), {}
    minutes = {"minutes": round(abs(skew) / 60)}
    return (N_("%(minutes)d min ahead") if skew > 0 else N_("%(minutes)d min behind")), minutes


def quiet_for(gap: timedelta | None) -> tuple[str, dict[str, int]] | None:
    """How long since the last submission, as a message id and its numbers (days and hours,
    hours and minutes, or minutes)."""
    if gap is None:
        return None
    minutes = max(0, int(gap.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return N_("%(days)d d %(hours)d h"), {"days": days, "hours": hours}
    if hours:
        return N_("%(hours)d h %(minutes)d min"), {"hours": hours, "minutes": minutes}
    return N_("%(minutes)d min"), {"minutes": minutes}


def view(figures: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The API's rows with what the page shows beside them: the share refused, the top codes,
    the kinds most sent first, how long it has been quiet, and why it needs attention."""
    rows = []
    for row in figures["institutions"]:
        answered = row["accepted"] + row["rejected"]
        rows.append(
            {
                **row,
                "refused_share": row["rejected"] / answered if answered else None,
                "top_codes": row["rejection_codes"][:TOP_CODES],
                "more_codes": max(0, len(row["rejection_codes"]) - TOP_CODES),
                "kinds": sorted(row["items_by_kind"].items(), key=lambda kv: (-kv[1], kv[0])),
                "quiet": quiet_for(since(row["last_submission_at"], now)),
                "attention": attention(row, now),
                "clock": clock_state(row["edge_clock"]),
            }
        )
    return rows


def daily_chart(daily: list[dict[str, Any]]) -> Any:
    """The county's accepted and refused submissions per day; a label every few days so that
    they do not overlap (every day is in the table)."""
    every = max(1, len(daily) // 10)
    return bar_chart(
        [
            (d["day"][5:] if i % every == 0 else "", [float(d["accepted"]), float(d["rejected"])])
            for i, d in enumerate(daily)
        ]
    )


class QualityPages:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.api = DataQuality(ctx)

    async def quality(self, call: Call) -> Answer:
        days = call.request.query_params.get("days", "").strip()
        answer = await self.api.figures(asking(call, [("days", days)] if days else []))
        figures = body_of(answer)
        rows = view(figures, call.now)
        html = page(
            call.request,
            "regulator_quality.html",
            self.ctx.page_key,
            days=figures["days"],
            first_day=figures["from"],
            windows=[(w, WINDOW_LABELS[w]) for w in WINDOWS],
            rows=[r for r in rows if r["level"] in MEMBERS],
            desks=[r for r in rows if r["level"] not in MEMBERS],
            needing=[r for r in rows if r["attention"]],
            attention_labels=ATTENTION,
            level_labels=LEVEL_LABELS,
            kind_labels=KIND_LABELS,
            daily=figures["daily"],
            daily_chart=daily_chart(figures["daily"])
            if any(d["accepted"] or d["rejected"] for d in figures["daily"])
            else None,
            totals={k: sum(r[k] for r in rows) for k in ("accepted", "rejected", "items")},
        )
        return dataclasses.replace(answer, response=html)


def quality_pages(ctx: ApiContext) -> list[ApiRoute]:
    q = QualityPages(ctx)
    return [ApiRoute("GET", "/app/audit/data-quality", QUALITY_PAGE, q.quality)]
