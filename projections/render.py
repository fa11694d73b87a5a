"""Canonical clinical items → FHIR R4 JSON, rendered once when the projection writes a row.

The read path assembles Bundles from these pre-rendered bytes (FHIR model serialisation is
too slow to run per request, DESIGN.md). Every resource says which institution submitted it:
``meta.source`` and a ``submitted-by`` extension naming the Organization. ``RENDERERS`` maps
each item kind to its renderer: adding a kind is one line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any
from uuid import NAMESPACE_URL, UUID, SafeUUID, uuid5

import orjson

from domain.identity import RESIDENT_ID_SYSTEM
from domain.resident_id import DISCREPANCIES
from projections.render_clinical import (
    _allergy,
    _condition,
    _document,
    _encounter,
    _immunization,
    _observation,
    _procedure,
)
from projections.render_consent import _consent
from projections.render_medications import _medication_dispense, _medication_request
from projections.render_values import INSTITUTION_SYSTEM, Ref

RESOURCE_TYPES = {
    "encounter": "Encounter",
    "condition": "Condition",
    "observation": "Observation",
    "consent": "Consent",
    "medication_request": "MedicationRequest",
    "medication_dispense": "MedicationDispense",
    "procedure": "Procedure",
    "immunization": "Immunization",
    "allergy": "AllergyIntolerance",
    "document": "DocumentReference",
}
SUBMITTED_BY = "urn:county-hie:fhir:StructureDefinition:submitted-by"
# Data-quality flags on a resource (meta.tag): its codes are domain.resident_id's.
DATA_QUALITY_SYSTEM = "urn:county-hie:data-quality"
_ENTRY_NS = uuid5(NAMESPACE_URL, "urn:county-hie:entry")


_ENTRY_SHA1 = hashlib.sha1(_ENTRY_NS.bytes, usedforsecurity=False)
_VERSION_5 = ~(0xF000 << 64) & ~(0xC000 << 48), (5 << 76) | (0x8000 << 48)


def entry_id(institution: str, source_id: str) -> UUID:
    """``uuid5(_ENTRY_NS, f"{institution}/{source_id}")``, in a third of its time: the hash
    of the namespace is taken once, and the UUID is made without ``UUID.__init__``'s checks
    (one per item the projection writes)."""
    digest = _ENTRY_SHA1.copy()
    digest.update(f"{institution}/{source_id}".encode())
    keep, set_bits = _VERSION_5
    made = object.__new__(UUID)
    object.__setattr__(made, "int", int.from_bytes(digest.digest()[:16]) & keep | set_bits)
    object.__setattr__(made, "is_safe", SafeUUID.unknown)
    return made


def dumps(resource: dict[str, Any]) -> str:
    """Compact JSON, UTF-8 as it is (orjson: a fifth of the standard library's time here)."""
    return orjson.dumps(resource).decode()


def _meta(institution: str, institution_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = {"source": f"{INSTITUTION_SYSTEM}:{institution}"}
    ext = [
        {
            "url": SUBMITTED_BY,
            "valueReference": {
                "identifier": {"system": INSTITUTION_SYSTEM, "value": institution},
                "display": institution_name,
            },
        }
    ]
    return meta, ext


def render(
    kind: str,
    payload: Any,
    *,
    resource_id: UUID,
    patient_id: UUID,
    institution: str,
    institution_name: str,
) -> dict[str, Any]:
    """The FHIR R4 resource for one accepted item."""
    meta, ext = _meta(institution, institution_name)
    subject = {"reference": f"Patient/{patient_id}"}

    def encounter_ref(source_id: str | None) -> dict[str, Any]:
        if not source_id:
            return {}
        return {"encounter": {"reference": f"Encounter/{entry_id(institution, source_id)}"}}

    renderer = RENDERERS.get(kind)
    if renderer is None:
        raise TypeError(f"no FHIR rendering for kind {kind}")
    res = renderer(payload, subject, encounter_ref)
    return {"id": str(resource_id), "meta": meta, "extension": ext, **res}


# One renderer per kind that becomes a FHIR resource of its own (entries and consents).
RENDERERS: dict[str, Callable[[Any, Ref, Any], dict[str, Any]]] = {
    "encounter": _encounter,
    "condition": _condition,
    "observation": _observation,
    "consent": _consent,
    "medication_request": _medication_request,
    "medication_dispense": _medication_dispense,
    "procedure": _procedure,
    "immunization": _immunization,
    "allergy": _allergy,
    "document": _document,
}


def render_patient(
    patient_id: UUID,
    *,
    identifiers: list[tuple[str, str]],
    demographics: dict[str, Any] | None,
    birth_date: str | None,
    sex: str | None,
    quality_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """The regional Patient: one resident across institutions, with every linked identifier.
    ``quality_flags`` (where the demographics contradict their resident ID) become
    ``meta.tag`` codings, so that whoever reads the record sees them."""
    res: dict[str, Any] = {"resourceType": "Patient", "id": str(patient_id)}
    if quality_flags:
        res["meta"] = {"tag": [_quality_tag(code) for code in quality_flags]}
    res["identifier"] = [
        {
            "system": system,
            "value": value,
            **({"type": {"text": "居民身份证"}} if system == RESIDENT_ID_SYSTEM else {}),
        }
        for system, value in identifiers
    ]
    # Demographics as the latest submitting institution gave them; else what the ID says.
    demographics = demographics or {}
    if demographics.get("name"):
        res["name"] = [{"text": demographics["name"]}]
    if demographics.get("gender") or sex:
        res["gender"] = demographics.get("gender") or sex
    if demographics.get("birth_date") or birth_date:
        res["birthDate"] = demographics.get("birth_date") or birth_date
    return res


def _quality_tag(code: str) -> dict[str, str]:
    known = DISCREPANCIES.get(code)  # a flag of a rule since retired keeps its code
    return {
        "system": DATA_QUALITY_SYSTEM,
        "code": code,
        **({"display": known.title} if known else {}),
    }
