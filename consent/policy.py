"""The consortium's access policy (roles that read for care, the purpose × category matrix,
break-glass and referral minimums), checked when built and fingerprinted for each read; the
configuration consent/decision.py decides under. Pure, no IO."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta

from domain.categories import GENERAL


@dataclass(frozen=True)
class AccessPolicy:
    """The consortium's access policy (configuration; these are the defaults)."""

    clinical_roles: tuple[str, ...] = ("physician", "nurse")
    # Purpose → the general categories it may see (sensitive ones only when named by consent).
    purposes: dict[str, frozenset[str]] = field(
        default_factory=lambda: {
            "TREAT": frozenset(GENERAL),
            "HRESCH": frozenset(
                {"diagnosis", "lab", "vital", "medication", "immunization", "procedure", "allergy"}
            ),
        }
    )
    break_glass_categories: frozenset[str] = frozenset(GENERAL)
    # What an institution whose only care relationship is a referral sees.
    referral_categories: frozenset[str] = frozenset(
        {"demographics", "encounter", "diagnosis", "medication", "allergy", "lab", "vital"}
    )
    recent_results: timedelta = timedelta(days=180)  # "recent results" for a referral
    care_after_record: timedelta = timedelta(days=365)  # an entry recorded keeps care this long
    needs_care: frozenset[str] = frozenset({"TREAT"})
    # Break-glass grants one person may obtain, in any hour and any day, past which the
    # exchange refuses and alerts. (Not in the fingerprint: they decide grants, not reads.)
    break_glass_per_hour: int = 3
    break_glass_per_day: int = 10

    def fingerprint(self) -> str:
        """SHA-256 of the policy's canonical form: recorded with each read, so a decision can
        be judged again under the policy it was made under."""
        doc = {
            "clinical_roles": sorted(self.clinical_roles),
            "purposes": {k: sorted(v) for k, v in sorted(self.purposes.items())},
            "break_glass_categories": sorted(self.break_glass_categories),
            "referral_categories": sorted(self.referral_categories),
            "recent_results": self.recent_results.total_seconds(),
            "care_after_record": self.care_after_record.total_seconds(),
            "needs_care": sorted(self.needs_care),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def __post_init__(self) -> None:
        if set(self.clinical_roles) - {"physician", "nurse"}:
            raise ValueError(
                "clinical_roles are physician and/or nurse: regulators and "
                "admins never read clinical data"
            )
        if self.break_glass_per_hour < 1 or self.break_glass_per_day < self.break_glass_per_hour:
            raise ValueError(
                "break_glass_per_hour is at least 1 and break_glass_per_day at least as many"
            )
        if set(self.break_glass_categories) - set(GENERAL):
            raise ValueError("break_glass_categories names unknown or sensitive categories")
        for purpose, cats in self.purposes.items():
            unknown = set(cats) - set(GENERAL)
            if unknown:
                raise ValueError(
                    f"policy purpose {purpose} names unknown or sensitive "
                    f"categories {sorted(unknown)}; sensitive ones need consent"
                )


DEFAULT_POLICY = AccessPolicy()
