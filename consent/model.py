"""What the decision point takes and gives: the request, a reason, the decision (plain frozen
records, pure; consent/decision.py re-exports them beside the rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from domain.categories import CATEGORIES


@dataclass(frozen=True, slots=True)
class AccessRequest:
    person: str
    role: str
    institution: str
    patient_id: UUID
    purpose: str
    at: datetime
    position: int | None = None  # the ledger position the facts are taken as of
    own_record: bool = False  # a patient token whose patient this is


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    permit: bool
    reasons: list[Reason]
    legal_basis: str | None = None  # "consent:<id>[,…]", "break-glass:<id>", "data-subject"
    consent_id: UUID | None = None
    break_glass: bool = False
    obligations: list[str] = field(default_factory=list)
    care_basis: str | None = None  # the care relationship the read relied on
    categories: tuple[str, ...] = ()  # what may be disclosed
    results_since: datetime | None = None  # lab and vital results only from then (referral)
    alert: str | None = None  # raised for the regulator (a sealed record read by another)

    @property
    def withheld(self) -> tuple[str, ...]:
        """Categories this decision does not disclose: a statement about the decision, the
        same whatever the record holds (it never says what the record contains)."""
        return tuple(c for c in CATEGORIES if c not in self.categories)
