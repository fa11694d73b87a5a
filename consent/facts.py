"""What the ledger (and the gate's own grants) said about a patient as of a ledger position: the
consents, guardians, care relationships, seals and break-glass grants that consent/decision.py
decides on, and a referral as consent/referrals.py decides on its content. Plain frozen
records; pure, no IO."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    consent_id: UUID
    consent_type: str  # "separate" | "general"
    scope: tuple[str, ...]  # institution codes, or "*" for the whole consortium
    purposes: tuple[str, ...]
    valid_from: datetime
    valid_to: datetime | None
    categories: tuple[str, ...] | None = None  # None: every general category
    signed_by: str = "patient"
    guardian: str | None = None  # the signing guardian's resident ID
    position: int = 0
    withdrawn_position: int | None = None
    institution: str = ""  # the recording institution
    # From which position it counts in full (None: it reaches beyond its institution and
    # waits for the patient's confirmation or its signed form); facts read from the
    # projection always say.
    confirmed_position: int | None = 0

    def confirmed(self, position: int | None) -> bool:
        return self.confirmed_position is not None and (
            position is None or self.confirmed_position <= position
        )


@dataclass(frozen=True, slots=True)
class GuardianRecord:
    guardian: str
    valid_from: datetime
    valid_to: datetime | None
    position: int = 0


@dataclass(frozen=True, slots=True)
class CareRelationship:
    """Why an institution treats the patient: "encounter:<entry id>", "record:<entry id>",
    "contract:<position>" or "referral:<id>", valid in [valid_from, valid_to)."""

    basis: str
    institution: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    @property
    def kind(self) -> str:
        return self.basis.split(":", 1)[0]

    def holds(self, institution: str, at: datetime) -> bool:
        return (
            self.institution == institution
            and (self.valid_from is None or self.valid_from <= at)
            and (self.valid_to is None or at < self.valid_to)
        )


@dataclass(frozen=True, slots=True)
class SealRecord:
    readers: tuple[str, ...]
    position: int
    unsealed_position: int | None = None

    def active(self, position: int | None) -> bool:
        if position is None:
            return self.unsealed_position is None
        return self.position <= position and (
            self.unsealed_position is None or self.unsealed_position > position
        )


@dataclass(frozen=True, slots=True)
class BreakGlassGrant:
    grant_id: UUID
    person: str
    patient_id: UUID
    reason_code: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """One referral, as the rule on its content needs it: its parties, where it stands, the
    receiver's care window (from acceptance; ``care_until`` set once it completes or is called
    off) and ``closed_at``, when the loop closed for the sender (followed up, rejected,
    cancelled or expired; None while it is open)."""

    referral_id: UUID
    from_institution: str
    to_institution: str
    status: str
    requested_at: datetime
    care_from: datetime | None = None
    care_until: datetime | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ResearchProject:
    """A research project the regulator registered (科研项目备案): its ethics approval, the
    institutions that read for it, the categories it may see and its period. ``salt`` keys
    the project's pseudonyms and date shifts."""

    code: str
    title: str
    ethics_approval: str
    institutions: tuple[str, ...]
    categories: tuple[str, ...]
    starts: datetime
    ends: datetime
    salt: bytes = b""

    def active(self, at: datetime) -> bool:
        return self.starts <= at < self.ends


@dataclass(frozen=True)
class Facts:
    """What the ledger (and the gate's own grants) said about the patient as of a position."""

    birth_date: date | None = None
    consents: Sequence[ConsentRecord] = ()
    guardians: Sequence[GuardianRecord] = ()
    care: Sequence[CareRelationship] = ()
    seals: Sequence[SealRecord] = ()
    grants: Sequence[BreakGlassGrant] = ()
    research: ResearchProject | None = None  # the project a research read names
