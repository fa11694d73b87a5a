"""What the patient's pages show, in words: a consent (who it lets read, for what, which
kinds of data, from when to when, in which state) and a line of "who read my record" (when,
who, from which institution, why, whether it was an emergency access). Pure: the FHIR the
API answered in, the names of the institutions, out the rows a template lays out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange.pages.i18n import N_
from exchange.pages.notice import Notice

EVERY_INSTITUTION = "*"

STATES = {
    "active": N_("In force"),
    "inactive": N_("Withdrawn"),
    "proposed": N_("Waiting for your confirmation"),
}
PURPOSES = {
    "TREAT": N_("your treatment"),
    "ETREAT": N_("emergency treatment"),
    "PATRQT": N_("at your own request"),
    "HOPERAT": N_("oversight of the exchange"),
    "HRESCH": N_("health research"),
    "PUBHLTH": N_("public health"),
}
ROLES = {
    "physician": N_("Physician"),
    "nurse": N_("Nurse"),
    "regulator": N_("Regulator"),
    "patient": N_("Patient"),
}
CATEGORIES = {
    "demographics": N_("identity"),
    "encounter": N_("visits"),
    "diagnosis": N_("diagnoses"),
    "medication": N_("medications"),
    "allergy": N_("allergies"),
    "lab": N_("lab results"),
    "vital": N_("vital signs"),
    "procedure": N_("procedures"),
    "immunization": N_("immunizations"),
    "document": N_("documents"),
    "observation": N_("observations"),
    "hiv": N_("HIV"),
    "psychiatric": N_("mental health"),
    "reproductive": N_("reproductive health"),
    "genetic": N_("genetic information"),
}
# What an audited action did to the record, as the patient reads it.
# What each route's action did with the patient's record, in the patient's words: every route
# that records a patient is here (tests/unit/test_patient_pages.py holds the rest apart), the
# API's and the page's under one wording.
_READ = N_("Read your record")
_GLASS = N_("Emergency access (break-glass) granted")
_REFERRAL = N_("Read a referral of yours")
_LISTED = N_("Saw a referral of yours in a list")
_OVERSIGHT = N_("A regulator checked the use of your record")
ACTIONS = {
    "read": _READ,
    "page.record": _READ,
    "page.trend": N_("Read a test's results over time"),
    "page.as-it-stood": N_("Read your record as it stood at an earlier time"),
    "lookup": N_("Looked up your record by an identifier"),
    "page.search": N_("Looked up your record by an identifier"),
    "break-glass": _GLASS,
    "page.break-glass": _GLASS,
    "page.break-glass-dialog": N_("Opened the emergency access form for your record"),
    "consent-read": N_("Read your consents"),
    "page.consents": N_("Read your consents"),
    "referral-read": _REFERRAL,
    "referral-history": _REFERRAL,
    "page.referral-history": _REFERRAL,
    "referral-search": _LISTED,
    "referral-inbox": _LISTED,
    "referral-outbox": _LISTED,
    "page.referral-inbox": _LISTED,
    "page.referral-outbox": _LISTED,
    "audit-seal-lift": N_("Lifted a seal on your record"),
    "mpi.merge-requests": N_("The identity steward checked whether two records are both yours"),
    "mpi.merge-decision": N_("The identity steward checked whether two records are both yours"),
    "audit-seals": _OVERSIGHT,
    "audit-read": _OVERSIGHT,
    "audit-export": _OVERSIGHT,
    "audit-redecide": _OVERSIGHT,
    "audit-disclosed": _OVERSIGHT,
    "audit-alerts": _OVERSIGHT,
    "breach-scope": _OVERSIGHT,
    "break-glass.queue": _OVERSIGHT,
    "break-glass.review": _OVERSIGHT,
    "page.audit-search": _OVERSIGHT,
    "page.audit-export": _OVERSIGHT,
    "page.audit-alerts": _OVERSIGHT,
    "page.breach-scope": _OVERSIGHT,
    "page.break-glass-queue": _OVERSIGHT,
}
EMERGENCY_ACTIONS = frozenset({"break-glass", "page.break-glass"})
OTHER_ACTION = N_("Another use of your record")
BREAK_GLASS_URL = "urn:county-hie:fhir:StructureDefinition:break-glass"


def consent_rows(
    resources: list[dict[str, Any]], names: Mapping[str, str], notice: Notice | None
) -> list[dict[str, Any]]:
    """Each consent as the patient reads it, newest first (the API lists them oldest first);
    ``our_notice``: given under the consortium's notice as it stands now."""
    rows = []
    for consent in reversed(resources):
        provision = consent.get("provision") or {}
        scope = [
            str((a.get("reference") or {}).get("identifier", {}).get("value", ""))
            for a in provision.get("actor") or []
        ]
        shown = next(
            (
                str(p.get("uri", "")).removeprefix("urn:sha256:")
                for p in consent.get("policy") or []
            ),
            "",
        )
        labels = [str(s.get("code", "")) for s in provision.get("securityLabel") or []]
        period = provision.get("period") or {}
        rows.append(
            {
                "id": str(consent.get("id", "")),
                "status": str(consent.get("status", "")),
                "state": STATES.get(str(consent.get("status")), N_("Unknown")),
                "everyone": EVERY_INSTITUTION in scope,
                "institutions": [names.get(code, code) for code in scope if code != "*"],
                "purposes": [
                    PURPOSES.get(str(p.get("code")), str(p.get("code")))
                    for p in provision.get("purpose") or []
                ],
                "categories": [CATEGORIES.get(c, c) for c in labels],
                "start": period.get("start"),
                "end": period.get("end"),
                "our_notice": notice is not None and shown == notice.sha256,
                "notice": shown[:12],
            }
        )
    return rows


def access_rows(
    events: list[dict[str, Any]], names: Mapping[str, str], me: str
) -> list[dict[str, Any]]:
    """Every access to the record by someone other than the patient, newest first."""
    rows = []
    for event in events:
        agent = (event.get("agent") or [{}])[0]
        who = str(((agent.get("who") or {}).get("identifier") or {}).get("value", ""))
        if who == me:  # the patient's own look at their record is no one else's read
            continue
        action = str((event.get("subtype") or [{}])[0].get("code", ""))
        institution = str(((agent.get("location") or {}).get("identifier") or {}).get("value", ""))
        purpose = next(
            (
                str(c.get("code", ""))
                for p in event.get("purposeOfEvent") or []
                for c in p.get("coding") or []
            ),
            "",
        )
        role = str(((agent.get("role") or [{}])[0]).get("text", ""))
        rows.append(
            {
                "seq": int(str(event.get("id", "0")) or 0),
                "when": event.get("recorded"),
                "who": who,
                "role": ROLES.get(role, role),
                "institution": names.get(institution, institution),
                "what": ACTIONS.get(action, OTHER_ACTION),
                "purpose": PURPOSES.get(purpose, purpose),
                "permitted": event.get("outcome") == "0",
                "emergency": action in EMERGENCY_ACTIONS
                or purpose == "ETREAT"
                or any(e.get("url") == BREAK_GLASS_URL for e in event.get("extension") or []),
            }
        )
    return sorted(rows, key=lambda row: row["seq"], reverse=True)


def notice_rows(notices: list[dict[str, Any]], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """The portal's notices of emergency access (PIPL Art. 18), newest first."""
    reasons = {
        "unconscious": N_("you could not consent (unconscious or incapacitated)"),
        "life-threatening": N_("a life-threatening emergency"),
        "public-health-emergency": N_("a public-health emergency"),
    }
    return [
        {
            "institution": names.get(str(n.get("institution")), str(n.get("institution"))),
            "reason": reasons.get(str(n.get("reason_code")), str(n.get("reason_code"))),
            "granted": n.get("granted_at"),
            "expires": n.get("expires_at"),
        }
        for n in reversed(notices)
    ]
