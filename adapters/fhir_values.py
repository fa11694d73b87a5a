"""What the FHIR mappers share (adapters/fhir_clinical.py, fhir_medications.py, fhir_documents.py):
the code tables they translate with and the small converters of FHIR values to canonical ones."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.fhir_context import Context

Pairs = list[tuple[str, dict[str, Any]]]

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# The v3 ActEncounterCode value set R4's Encounter.class is bound to, as the exchange's classes.
ENCOUNTER_CLASSES = {
    "AMB": "outpatient",
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "EMER": "emergency",
    "HH": "home-health",
    "FLD": "field",
    "OBSENC": "observation",
    "PRENC": "pre-admission",
    "SS": "short-stay",
    "VR": "virtual",
}
# R4 codes without a canonical twin map to the nearest one; the rest pass through, and the
# canonical model refuses by name those it does not take (unknown, cancelled, ...).
ENCOUNTER_STATUSES = {"triaged": "arrived", "onleave": "in-progress"}
INTENTS = {"reflex-order": "order", "filler-order": "order"}
# The canonical category set; other categories are left unsaid.
CATEGORIES = (
    "vital-signs",
    "laboratory",
    "survey",
    "exam",
    "social-history",
    "imaging",
    "procedure",
)
PEOPLE = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Patient",
    "RelatedPerson",
    "Device",
    "CareTeam",
)
DAYS = {"d": 1, "day": 1, "days": 1, "天": 1, "wk": 7, "week": 7, "周": 7}
MAX_DATA = 700_000  # the canonical limit on inline base64; a larger document goes by its hash


def _compact(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None and v != []}


def _quantity(q: Any) -> dict[str, Any] | None:
    # system stays None when not given: the canonical default (UCUM) would be a guess.
    return (
        None
        if q is None
        else {
            "value": None if q.value is None else str(q.value),
            "unit": q.unit or q.code,
            "system": q.system,
            "code": q.code,
        }
    )


def _text(concept: Any) -> str | None:
    if concept is None:
        return None
    return concept.text or next((c.display for c in concept.coding or [] if c.display), None)


def _days(q: Any) -> int | None:
    factor = DAYS.get(q.code or q.unit or "") if q is not None and q.value is not None else None
    days = q.value * factor if factor else None
    return int(days) if isinstance(days, Decimal) and days == days.to_integral_value() else None


def _first(items: list[Any] | None) -> Any:
    return items[0] if items else None


def _coded(ctx: Context, concept: Any, where: str) -> dict[str, str] | None:
    found = ctx.first_coding(concept)
    if found is None:
        ctx.bad(
            "fhir.not_coded",
            f"{where} needs a coding with a code (a local code with no "
            "system is taken as this institution's own)",
            where,
        )
    return found
