"""The policy decision point: a pure function from a request and the consent state to a
decision with its reasons, its legal basis and its obligations.

Walking-skeleton rules (REGULATIONS.md has the full set, to come):
- clinical records are read by physicians only;
- purpose TREAT needs a *separate* consent (单独同意, PIPL Art. 29) that is valid at the
  moment of the request, names TREAT, and covers the requesting institution (PIPL Art. 23);
  a general consent never stands in for it;
- and, besides consent, a *care relationship* between the requesting institution and the
  patient at the moment of the request (医疗机构病历管理规定 Art. 15-16: only those treating
  the patient read the record): an encounter (or another entry: it saw the patient) it
  recorded, or a referral it accepted (from acceptance until the consortium's set time after
  completion);
- purpose ETREAT (break-glass, PIPL Art. 13) needs an unexpired break-glass grant this
  physician obtained for this patient with a reason; the read is flagged, and the patient is
  told afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

BREAK_GLASS_REASONS = {
    "unconscious": "patient unable to consent (unconscious or incapacitated)",
    "life-threatening": "life-threatening emergency",
    "public-health-emergency": "public-health emergency",
}
BREAK_GLASS_TTL = timedelta(hours=4)
MIN_REASON_TEXT = 10


@dataclass(frozen=True, slots=True)
class AccessRequest:
    person: str
    role: str
    institution: str
    patient_id: UUID
    purpose: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    consent_id: UUID
    consent_type: str  # "separate" | "general"
    scope: tuple[str, ...]  # institution codes, or "*" for the whole consortium
    purposes: tuple[str, ...]
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class CareRelationship:
    """Why an institution treats the patient: "encounter:<entry id>", "record:<entry id>" or
    "referral:<id>",
    valid in [valid_from, valid_to) (open-ended while valid_to is None)."""

    basis: str
    institution: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    def holds(self, institution: str, at: datetime) -> bool:
        return (self.institution == institution
                and (self.valid_from is None or self.valid_from <= at)
                and (self.valid_to is None or at < self.valid_to))


@dataclass(frozen=True, slots=True)
class BreakGlassGrant:
    grant_id: UUID
    person: str
    patient_id: UUID
    reason_code: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    permit: bool
    reasons: list[Reason]
    legal_basis: str | None = None  # "consent:<id>" or "break-glass:<grant id>"
    care_basis: str | None = None  # the care relationship the read relied on
    consent_id: UUID | None = None
    break_glass: bool = False
    obligations: list[str] = field(default_factory=list)


class InvalidBreakGlass(ValueError):
    code = "break_glass.invalid"


def check_break_glass(reason_code: object, reason_text: object) -> tuple[str, str]:
    """Validate a break-glass request's reason, or raise InvalidBreakGlass saying what to give."""
    if reason_code not in BREAK_GLASS_REASONS:
        raise InvalidBreakGlass(
            f"reason_code must be one of {', '.join(sorted(BREAK_GLASS_REASONS))}")
    if not isinstance(reason_text, str) or len(reason_text.strip()) < MIN_REASON_TEXT:
        raise InvalidBreakGlass(
            f"reason must be a written explanation of at least {MIN_REASON_TEXT} characters")
    return str(reason_code), reason_text.strip()


def _covers(consent: ConsentRecord, request: AccessRequest) -> bool:
    return "*" in consent.scope or request.institution in consent.scope


def _valid_at(consent: ConsentRecord, at: datetime) -> bool:
    return consent.valid_from <= at and (consent.valid_to is None or at < consent.valid_to)


def decide(
    request: AccessRequest,
    consents: Sequence[ConsentRecord],
    grants: Sequence[BreakGlassGrant] = (),
    care: Sequence[CareRelationship] = (),
) -> Decision:
    if request.role != "physician":
        return Decision(False, [Reason("role.not_permitted",
                                       f"the {request.role} role does not read clinical records")])
    if request.purpose == "ETREAT":
        live = [g for g in grants if g.person == request.person
                and g.patient_id == request.patient_id and request.at < g.expires_at]
        if not live:
            return Decision(False, [Reason(
                "break_glass.no_grant",
                "ETREAT needs a break-glass grant for this patient: POST $break-glass with a "
                "reason_code and a written reason first")])
        grant = max(live, key=lambda g: g.expires_at)
        return Decision(
            True, [Reason("break_glass.granted", "emergency access under a break-glass grant")],
            legal_basis=f"break-glass:{grant.grant_id}", break_glass=True,
            obligations=["flag-break-glass", "regulator-review", "notify-patient"])
    if request.purpose != "TREAT":
        return Decision(False, [Reason("purpose.not_supported",
                                       "clinical reads accept purpose TREAT or ETREAT")])
    reasons: list[Reason] = []
    valid = [c for c in consents if _valid_at(c, request.at)]
    if not valid:
        reasons.append(Reason("consent.none", "the patient has no consent valid at this time"))
    separate = [c for c in valid if c.consent_type == "separate"]
    if valid and not separate:
        reasons.append(Reason("consent.general_only",
                              "only a general consent is on record; health data needs a "
                              "separate consent (PIPL Art. 29)"))
    purposeful = [c for c in separate if request.purpose in c.purposes]
    if separate and not purposeful:
        reasons.append(Reason("consent.purpose", "no separate consent names this purpose"))
    covering = [c for c in purposeful if _covers(c, request)]
    if purposeful and not covering:
        reasons.append(Reason("consent.scope",
                              "no consent covers the requesting institution"))
    relationships = [c for c in care if c.holds(request.institution, request.at)]
    if not relationships:
        reasons.append(Reason("care.none", "the requesting institution has no care "
                              "relationship with the patient now (no encounter it recorded, "
                              "no referral it accepted that is still open or recent)"))
    if covering and relationships:
        chosen = max(covering, key=lambda c: c.valid_from)
        return Decision(True, [Reason("consent.permit", "a separate consent covers this read"),
                               Reason("care.relationship", relationships[0].basis)],
                        legal_basis=f"consent:{chosen.consent_id}", consent_id=chosen.consent_id,
                        care_basis=relationships[0].basis)
    return Decision(False, reasons)
