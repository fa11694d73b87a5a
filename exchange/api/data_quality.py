"""The consortium's data quality, institution by institution: what each sent and the exchange
accepted (submissions, items by kind), what it refused and for which problem codes, how
long since each last sent, over a window of days, and the clock of its village edge node as
the gateways last measured it (projections/intake.py). What a county's
information centre checks every morning; counts and codes only, no patient and no submission
id, so it reads no clinical data and is decided as county statistics are."""

from __future__ import annotations

from consent.decision import Decision, Reason
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused, json_response

DATA_QUALITY = Access(
    "data-quality",
    roles=frozenset({"regulator", "admin"}),
    refused_role="the {role} role does not read the consortium's data quality",
)
# Windows a person picks from: today, a week, a month, a quarter.
WINDOWS = (1, 7, 30, 90)
DEFAULT_WINDOW = 7


def window_of(raw: str | None) -> int:
    """``days`` as asked, or the default; anything but one of ``WINDOWS`` is refused."""
    if raw is None or not raw.strip():
        return DEFAULT_WINDOW
    if raw.strip() not in {str(w) for w in WINDOWS}:
        raise Refused(
            400,
            "search.days",
            f"days is one of {', '.join(str(w) for w in WINDOWS)} (the window ends today)",
            "invalid",
        )
    return int(raw)


class DataQuality:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def figures(self, call: Call) -> Answer:
        days = window_of(call.request.query_params.get("days"))
        figures = await self.ctx.intake.quality(days, call.now)
        return Answer(
            json_response(figures, call.request_id),
            Decision(
                True, [Reason("statistics.aggregate", "counts and problem codes, no patient")]
            ),
            purpose="HOPERAT",
        )


def data_quality_routes(ctx: ApiContext) -> list[ApiRoute]:
    return [ApiRoute("GET", "/audit/data-quality", DATA_QUALITY, DataQuality(ctx).figures)]
