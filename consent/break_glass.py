"""Break-glass (ETREAT, PIPL Art. 13/18): the reasons an emergency grant may give, how long it
lasts, and the brake on a person who asks for too many (pure; consent/decision.py re-exports
them)."""

from __future__ import annotations

from datetime import timedelta

from consent.model import Reason
from consent.policy import AccessPolicy
from domain.errors import ConsentError

BREAK_GLASS_REASONS = {
    "unconscious": "patient unable to consent (unconscious or incapacitated)",
    "life-threatening": "life-threatening emergency",
    "public-health-emergency": "public-health emergency",
}
BREAK_GLASS_TTL = timedelta(hours=4)
MIN_REASON_TEXT = 10


def break_glass_brake(in_hour: int, in_day: int, policy: AccessPolicy) -> Reason | None:
    """Why one more break-glass grant is refused to a person who obtained ``in_hour`` in the
    last hour and ``in_day`` in the last day (None: it is not). An emergency is rare; a run of
    them by one person is what a stolen token or a curious colleague looks like."""
    if in_hour >= policy.break_glass_per_hour:
        return Reason(
            "break_glass.rate_limited",
            f"break-glass is limited to {policy.break_glass_per_hour} patients an hour per "
            "person; the regulator has been alerted; ask the patient for consent, or a "
            "colleague",
        )
    if in_day >= policy.break_glass_per_day:
        return Reason(
            "break_glass.rate_limited",
            f"break-glass is limited to {policy.break_glass_per_day} patients a day per person; "
            "the regulator has been alerted; ask the patient for consent, or a colleague",
        )
    return None


class InvalidBreakGlass(ConsentError, ValueError):
    code = "break_glass.invalid"


def check_break_glass(reason_code: object, reason_text: object) -> tuple[str, str]:
    """Validate a break-glass request's reason, or raise InvalidBreakGlass saying what to give."""
    if reason_code not in BREAK_GLASS_REASONS:
        raise InvalidBreakGlass(
            f"reason_code must be one of {', '.join(sorted(BREAK_GLASS_REASONS))}"
        )
    if not isinstance(reason_text, str) or len(reason_text.strip()) < MIN_REASON_TEXT:
        raise InvalidBreakGlass(
            f"reason must be a written explanation of at least {MIN_REASON_TEXT} characters"
        )
    return str(reason_code), reason_text.strip()
