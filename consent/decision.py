"""The policy decision point: a pure function from (request, what the ledger said about the
patient as of a position, policy) to a decision with its reasons, its legal basis, the data
categories it lets through and its obligations.

The rules (REGULATIONS.md), in the order they are applied:
1. A patient reads their own record (PIPL Art. 45), nobody else's. Regulators and admins read
   no clinical data; only the policy's clinical roles (physician, nurse) read for care.
2. A sealed record (病历封存) is read only by the persons its seal names; anyone else is
   refused and an alert is raised — unless it is an emergency read under a break-glass
   grant, which a seal never blocks (it raises an alert of its own).
3. ETREAT (break-glass, PIPL Art. 13/18) needs an unexpired grant this person obtained for
   this patient with a reason; the read is flagged, reviewed and told to the patient.
4. Every other purpose is one the policy's purpose × category matrix knows (minimum
   necessary, PIPL Art. 5-6). TREAT needs a care relationship besides consent (a visit the
   institution recorded recently, an accepted referral, a family-doctor contract; 医疗机构病历
   管理规定 Art. 15-16).
5. A *separate* consent (单独同意, PIPL Art. 29) valid at the moment, not withdrawn as of the
   ledger position (Art. 15), naming the purpose (Art. 14) and covering the requesting
   institution (Art. 23), signed by the patient aged 14 or more or by a recorded guardian
   (Art. 31). A general consent never stands in for it. One member's record of a consent
   binds only itself: until the patient confirmed it (or its signed form was recorded), it
   counts only for the recording institution's own reads of general categories, for care.
6. The categories let through are the purpose's, within those the consents cover; a sensitive
   category (HIV, psychiatric, reproductive, genetic) only when a consent names it. With only a
   referral as care relationship, the referral's minimum: summary, diagnoses, medications,
   allergies and recent results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from uuid import UUID

from consent.break_glass import (
    BREAK_GLASS_REASONS,
    BREAK_GLASS_TTL,
    MIN_REASON_TEXT,
    InvalidBreakGlass,
    break_glass_brake,
    check_break_glass,
)
from consent.facts import (
    BreakGlassGrant,
    CareRelationship,
    ConsentRecord,
    Facts,
    GuardianRecord,
    SealRecord,
)
from consent.model import AccessRequest, Decision, Reason
from consent.policy import DEFAULT_POLICY, AccessPolicy
from domain.categories import CATEGORIES, GENERAL, SENSITIVE
from domain.consent_items import RESEARCH

# The facts records and the policy are re-exported: callers import them from here, beside the
# rules they feed.
__all__ = [
    "ADULT_AGE",
    "BREAK_GLASS_REASONS",
    "BREAK_GLASS_TTL",
    "CONSENT_READERS",
    "DEFAULT_POLICY",
    "MIN_REASON_TEXT",
    "AccessPolicy",
    "AccessRequest",
    "BreakGlassGrant",
    "CareRelationship",
    "ConsentRecord",
    "Decision",
    "Facts",
    "GuardianRecord",
    "InvalidBreakGlass",
    "Reason",
    "SealRecord",
    "age_on",
    "break_glass_brake",
    "check_break_glass",
    "decide",
    "is_own_record",
    "may_find",
    "may_read_consents",
    "own_audit_only",
    "sealed_to",
]

ADULT_AGE = 14  # PIPL Art. 31: under 14, a guardian consents


def is_own_record(role: str, person: str, members: Sequence[UUID]) -> bool:
    """Whether the caller is the patient: a patient token names one of the identities merged
    into the record (PIPL Art. 45: a patient reads their own record, under any of their ids)."""
    return role == "patient" and person in {str(m) for m in members}


def age_on(birth: date, day: date) -> int:
    """Whole years: one turns 14 on the 14th birthday (29 February: on 1 March)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def sealed_to(request: AccessRequest, facts: Facts) -> bool:
    """Whether a seal in force as of the request's position keeps this reader out: one that
    does not name them as ``<institution>/<person>``."""
    reader = f"{request.institution}/{request.person}"
    return any(s.active(request.position) and reader not in s.readers for s in facts.seals)


def _deny(
    *reasons: Reason, alert: str | None = None, obligations: list[str] | None = None
) -> Decision:
    return Decision(False, list(reasons), alert=alert, obligations=obligations or [])


def decide(request: AccessRequest, facts: Facts, policy: AccessPolicy = DEFAULT_POLICY) -> Decision:
    if request.role == "patient":
        if not request.own_record:
            return _deny(Reason("role.not_own_record", "a patient reads their own record only"))
        return Decision(
            True,
            [Reason("data_subject.permit", "the patient reads their own record (PIPL Art. 45)")],
            legal_basis="data-subject",
            categories=CATEGORIES,
        )
    if request.role not in policy.clinical_roles:
        return _deny(
            Reason("role.not_permitted", f"the {request.role} role does not read clinical records")
        )
    sealed = sealed_to(request, facts)
    if sealed and request.purpose == "ETREAT":
        # A seal never stands between a patient and emergency care: read under the grant,
        # and the regulator is told at once that a sealed record was opened.
        emergency = _break_glass(request, facts, policy)
        if emergency.permit:
            return replace(
                emergency,
                alert="sealed-record.break-glass",
                obligations=[*emergency.obligations, "alert-regulator"],
            )
        return emergency
    if sealed:
        return _deny(
            Reason(
                "record.sealed",
                "the record is sealed; only the persons the seal "
                "names may read it; this attempt is reported",
            ),
            alert="sealed-record",
            obligations=["alert-regulator"],
        )
    if request.purpose == "ETREAT":
        return _break_glass(request, facts, policy)
    if request.purpose not in policy.purposes:
        return _deny(
            Reason(
                "purpose.not_supported",
                f"clinical reads accept purpose {', '.join(['ETREAT', *policy.purposes])}",
            )
        )
    if request.purpose == RESEARCH:
        return _research(request, facts, policy)
    return _consented(request, facts, policy)


def _research(request: AccessRequest, facts: Facts, policy: AccessPolicy) -> Decision:
    """A research read: a project the regulator registered, running now, that the reader's
    institution reads for; the consents as for any read (naming research); only the
    project's categories; and the answer de-identified for the project."""
    project = facts.research
    if project is None:
        return _deny(
            Reason(
                "research.no_project",
                "a research read names a research project the regulator registered "
                "(X-Research-Project)",
            )
        )
    if not project.active(request.at):
        return _deny(Reason("research.inactive", "the research project is not running now"))
    if request.institution not in project.institutions:
        return _deny(
            Reason("research.not_member", "the institution does not read for this project")
        )
    decision = _consented(request, facts, policy)
    if not decision.permit:
        return decision
    categories = tuple(c for c in decision.categories if c in project.categories)
    if not categories:
        return _deny(
            Reason("research.categories", "the project may see none of the consented categories")
        )
    return replace(
        decision,
        reasons=[*decision.reasons, Reason("research.project", project.code)],
        legal_basis=f"{decision.legal_basis};research:{project.code}",
        categories=categories,
        obligations=[*decision.obligations, "de-identify"],
    )


def _break_glass(request: AccessRequest, facts: Facts, policy: AccessPolicy) -> Decision:
    live = [
        g
        for g in facts.grants
        if g.person == request.person
        and g.patient_id == request.patient_id
        and request.at < g.expires_at
    ]
    if not live:
        return _deny(
            Reason(
                "break_glass.no_grant",
                "ETREAT needs a break-glass grant for this "
                "patient: POST $break-glass with a reason_code and a written "
                "reason first",
            )
        )
    grant = max(live, key=lambda g: g.expires_at)
    return Decision(
        True,
        [Reason("break_glass.granted", "emergency access under a break-glass grant")],
        legal_basis=f"break-glass:{grant.grant_id}",
        break_glass=True,
        obligations=["flag-break-glass", "regulator-review", "notify-patient"],
        categories=tuple(c for c in CATEGORIES if c in policy.break_glass_categories),
    )


def _signer_valid(consent: ConsentRecord, request: AccessRequest, facts: Facts) -> str | None:
    """None if the consent's signer could consent for the patient; else a reason code."""
    if consent.signed_by == "guardian":
        recorded = any(
            g.guardian == consent.guardian
            and g.valid_from <= request.at
            and (g.valid_to is None or request.at < g.valid_to)
            and (request.position is None or g.position <= request.position)
            for g in facts.guardians
        )
        return None if recorded else "consent.guardian_not_recorded"
    if facts.birth_date is None:
        return "consent.age_unknown"
    # The signer's age when the consent began: a child's own consent does not become valid
    # on their 14th birthday.
    if age_on(facts.birth_date, consent.valid_from.date()) < ADULT_AGE:
        return "consent.signer_under_14"
    return None


_MESSAGES = {
    "consent.none": "the patient has no consent valid at this time",
    "consent.withdrawn": "the patient withdrew the consent that would cover this read",
    "consent.general_only": "only a general consent is on record; health data needs a "
    "separate consent (PIPL Art. 29)",
    "consent.signer_under_14": "the patient was under 14 and signed the consent themself; a "
    "recorded guardian must consent (PIPL Art. 31)",
    "consent.guardian_not_recorded": "the consent is signed by someone not recorded as the "
    "patient's guardian",
    "consent.age_unknown": "the patient's age is not known (no resident ID): only a recorded "
    "guardian's consent can be relied on",
    "consent.purpose": "no separate consent names this purpose",
    "consent.scope": "no consent covers the requesting institution",
    "consent.unconfirmed": "the consent that would cover this read was recorded by another "
    "institution and reaches beyond it: it counts once the patient confirms it in the "
    "patient portal, or the signed consent form is recorded",
    "care.none": "the requesting institution has no care relationship with the patient now "
    "(no recent visit it recorded, no referral it accepted that still holds, no "
    "family-doctor contract)",
}


def _in_force(consent: ConsentRecord, position: int | None) -> ConsentRecord | None:
    """What a consent lets through as of ``position``: all it says once it counts in full
    (``ConsentRecord.confirmed``); before, only the recording institution's own reads of
    general categories, for no research (None: nothing)."""
    if consent.confirmed(position):
        return consent
    if "*" not in consent.scope and consent.institution not in consent.scope:
        return None
    purposes = tuple(p for p in consent.purposes if p != RESEARCH)
    categories = consent.categories
    if categories is not None:
        categories = tuple(c for c in categories if c not in SENSITIVE)
    if not purposes or categories == ():
        return None
    return replace(consent, scope=(consent.institution,), purposes=purposes, categories=categories)


def _consented(request: AccessRequest, facts: Facts, policy: AccessPolicy) -> Decision:
    pos = request.position
    as_recorded = [c for c in facts.consents if pos is None or c.position <= pos]
    recorded = [f for c in as_recorded if (f := _in_force(c, pos)) is not None]
    valid = [
        c
        for c in recorded
        if c.valid_from <= request.at and (c.valid_to is None or request.at < c.valid_to)
    ]
    live = [
        c
        for c in valid
        if c.withdrawn_position is None or (pos is not None and c.withdrawn_position > pos)
    ]
    stages = [
        ("consent.none", valid),
        ("consent.withdrawn", live),
        ("consent.general_only", [c for c in live if c.consent_type == "separate"]),
    ]
    separate = stages[-1][1]
    signed = [c for c in separate if _signer_valid(c, request, facts) is None]
    if separate and not signed:  # the reason of the latest consent recorded
        latest = max(separate, key=lambda c: c.position)
        stages.append((_signer_valid(latest, request, facts) or "consent.none", signed))
    purposeful = [c for c in signed if request.purpose in c.purposes]
    stages.append(("consent.purpose", purposeful))
    covering = [c for c in purposeful if "*" in c.scope or request.institution in c.scope]
    stages.append(("consent.scope", covering))
    reasons: list[Reason] = []
    for code, survivors in stages:  # the first rule nothing passed is the reason
        if not survivors:
            reasons.append(Reason(code, _MESSAGES[code]))
            break
    if not covering and any(
        c.consent_type == "separate"
        and request.purpose in c.purposes
        and ("*" in c.scope or request.institution in c.scope)
        for c in valid
        if c not in live
    ):
        # A consent that would cover this read was withdrawn: that is the reason to give.
        reasons = [Reason("consent.withdrawn", _MESSAGES["consent.withdrawn"])]
    elif not covering and any(
        not c.confirmed(pos)
        and c.consent_type == "separate"
        and request.purpose in c.purposes
        and ("*" in c.scope or request.institution in c.scope)
        for c in as_recorded
    ):
        # One would cover it once the patient confirms it: say so.
        reasons = [Reason("consent.unconfirmed", _MESSAGES["consent.unconfirmed"])]
    care = [c for c in facts.care if c.holds(request.institution, request.at)]
    if request.purpose in policy.needs_care and not care:
        reasons.append(Reason("care.none", _MESSAGES["care.none"]))
    if reasons:
        return _deny(*reasons)
    allowed = policy.purposes[request.purpose]
    granted: set[str] = set()
    for c in covering:
        named = set(c.categories) if c.categories is not None else set(GENERAL)
        granted |= (named & allowed) | (named & set(SENSITIVE))
    results_since = None
    chosen_care = _best_care(care)
    if chosen_care is not None and all(c.kind == "referral" for c in care):
        granted &= policy.referral_categories | set(SENSITIVE)
        results_since = request.at - policy.recent_results
    categories = tuple(c for c in CATEGORIES if c in granted)
    if not categories:
        return _deny(
            Reason("consent.categories", "the consents cover no category this purpose may see")
        )
    ordered = sorted(covering, key=lambda c: (c.valid_from, str(c.consent_id)), reverse=True)
    basis = "consent:" + ",".join(str(c.consent_id) for c in ordered)
    reasons = [Reason("consent.permit", "a separate consent covers this read")]
    if chosen_care is not None:
        reasons.append(Reason("care.relationship", chosen_care.basis))
    return Decision(
        True,
        reasons,
        legal_basis=basis,
        consent_id=ordered[0].consent_id,
        care_basis=chosen_care.basis if chosen_care else None,
        categories=categories,
        results_since=results_since,
    )


def _best_care(care: Sequence[CareRelationship]) -> CareRelationship | None:
    """The relationship to cite: the institution's own care before a referral's."""
    rank = {"encounter": 0, "contract": 1, "record": 2, "referral": 3}
    return min(care, key=lambda c: (rank.get(c.kind, 9), c.basis)) if care else None


# Rules of the other patient routes, beside decide() -------------------------------------------


def may_find(
    purpose: str, institution: str, at: datetime, facts: Facts, *, referred: bool = False
) -> Decision:
    """Whether a physician's identifier lookup may say that the patient is known: only to an
    institution that cares for them (a visit it recorded, a contract, an accepted referral),
    that takes part in a referral of theirs (``referred``), or in an emergency (ETREAT, on
    the way to break-glass). Otherwise the answer is the one an unknown identifier gets, so a
    lookup reveals nobody's presence."""
    if purpose == "ETREAT":
        return Decision(True, [Reason("lookup.emergency", "identifier lookup in an emergency")])
    if any(c.holds(institution, at) for c in facts.care):
        return Decision(True, [Reason("lookup.care", "identifier lookup by a caring institution")])
    if referred:
        return Decision(True, [Reason("lookup.referral", "identifier lookup by a referral party")])
    return _deny(
        Reason(
            "lookup.not_permitted",
            "the institution has no care relationship with the patient: answered as unknown",
        )
    )


CONSENT_READERS = (
    "the patient, and clinicians treating them (X-Purpose-Of-Use: TREAT), read the consents"
)


def may_read_consents(
    request: AccessRequest, facts: Facts, policy: AccessPolicy = DEFAULT_POLICY
) -> Decision:
    """Who reads a patient's consents (``Consent?patient=``): the patient their own; a
    clinician only with TREAT, while their institution holds a care relationship with the
    patient, and not a sealed record the seal does not name them on."""
    if request.own_record:
        return _consent_state("data-subject")
    if (
        request.role in policy.clinical_roles
        and request.purpose == "TREAT"
        and any(c.holds(request.institution, request.at) for c in facts.care)
        and not sealed_to(request, facts)
    ):
        return _consent_state("care")
    return _deny(Reason("consent.not_permitted", CONSENT_READERS))


def _consent_state(basis: str) -> Decision:
    return Decision(
        True,
        [
            Reason(
                "consent.state",
                "the data subject, or a clinician who needs the basis of a decision",
            )
        ],
        legal_basis=basis,
    )


def own_audit_only(role: str, person: str, asked_patient: str) -> Reason | None:
    """Why an access-history search (``AuditEvent?patient=``) is refused, or None: a patient
    (PIPL Art. 45) asks only about themself; what they are shown is then limited to the rows
    of their own identities whatever else they ask."""
    if role == "patient" and asked_patient and asked_patient != person:
        return Reason("role.not_own_record", "a patient reads the audit of their own record")
    return None
