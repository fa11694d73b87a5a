"""Canonical clinical items → FHIR R4 JSON, rendered once when the projection writes a row.

The read path assembles Bundles from these pre-rendered bytes (FHIR model serialisation is
too slow to run per request, DESIGN.md). Every resource says which institution submitted it:
``meta.source`` and a ``submitted-by`` extension naming the Organization.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.clinical import (
    Coding,
    ConditionPayload,
    ConsentPayload,
    EncounterPayload,
    ObservationPayload,
    Quantity,
)
from domain.identity import RESIDENT_ID_SYSTEM

INSTITUTION_SYSTEM = "urn:county-hie:institution"
SUBMITTED_BY = "urn:county-hie:fhir:StructureDefinition:submitted-by"
_ENTRY_NS = uuid5(NAMESPACE_URL, "urn:county-hie:entry")
_ENCOUNTER_CLASS = {
    "outpatient": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
}


def entry_id(institution: str, source_id: str) -> UUID:
    return uuid5(_ENTRY_NS, f"{institution}/{source_id}")


def dumps(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def _coding(c: Coding) -> dict[str, Any]:
    out: dict[str, Any] = {"system": c.system, "code": c.code}
    if c.version:
        out["version"] = c.version
    if c.display:
        out["display"] = c.display
    return out


def _concept(c: Coding) -> dict[str, Any]:
    return {"coding": [_coding(c)], **({"text": c.display} if c.display else {})}


def _quantity(q: Quantity) -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(q.value) if "." in str(q.value) else int(q.value),
                           "unit": q.unit}
    if q.system:
        out["system"] = q.system
    out["code"] = q.code or q.unit
    return out


def _meta(institution: str, institution_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = {"source": f"{INSTITUTION_SYSTEM}:{institution}"}
    ext = [{
        "url": SUBMITTED_BY,
        "valueReference": {
            "identifier": {"system": INSTITUTION_SYSTEM, "value": institution},
            "display": institution_name,
        },
    }]
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

    if isinstance(payload, EncounterPayload):
        code, display = _ENCOUNTER_CLASS[payload.encounter_class]
        period = {"start": payload.start.isoformat()}
        if payload.end:
            period["end"] = payload.end.isoformat()
        res: dict[str, Any] = {
            "resourceType": "Encounter", "status": payload.status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": code, "display": display},
            "subject": subject, "period": period,
        }
        if payload.department:
            res["serviceType"] = {"text": payload.department}
        if payload.reason:
            res["reasonCode"] = [_concept(c) for c in payload.reason]
    elif isinstance(payload, ConditionPayload):
        res = {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": payload.clinical_status}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": payload.verification_status}]},
            "code": _concept(payload.code), "subject": subject,
            **encounter_ref(payload.encounter),
        }
        if payload.onset:
            res["onsetDateTime"] = payload.onset.isoformat()
        if payload.recorded:
            res["recordedDate"] = payload.recorded.isoformat()
    elif isinstance(payload, ObservationPayload):
        res = {"resourceType": "Observation", "status": payload.status}
        if payload.category:
            res["category"] = [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": payload.category}]}]
        res |= {"code": _concept(payload.code), "subject": subject,
                **encounter_ref(payload.encounter),
                "effectiveDateTime": payload.effective.isoformat()}
        if payload.value_quantity:
            res["valueQuantity"] = _quantity(payload.value_quantity)
        elif payload.value_string:
            res["valueString"] = payload.value_string
        elif payload.value_coding:
            res["valueCodeableConcept"] = _concept(payload.value_coding)
        if payload.interpretation:
            res["interpretation"] = [_concept(payload.interpretation)]
        if payload.reference_range:
            rr: dict[str, Any] = {}
            if payload.reference_range.low:
                rr["low"] = _quantity(payload.reference_range.low)
            if payload.reference_range.high:
                rr["high"] = _quantity(payload.reference_range.high)
            if payload.reference_range.text:
                rr["text"] = payload.reference_range.text
            res["referenceRange"] = [rr]
    elif isinstance(payload, ConsentPayload):
        res = {
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "urn:county-hie:consent-type",
                                      "code": payload.consent_type}]}],
            "patient": subject,
            "policy": [{"uri": f"urn:sha256:{payload.notice_sha256}"}],
            "provision": {
                "type": "permit",
                "period": {"start": payload.valid_from.isoformat(),
                           **({"end": payload.valid_to.isoformat()} if payload.valid_to else {})},
                "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                             "code": p} for p in payload.purposes],
                "actor": [{"role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                    "reference": {"identifier": {"system": INSTITUTION_SYSTEM, "value": code}}}
                    for code in payload.scope],
            },
        }
    else:
        raise TypeError(f"no FHIR rendering for kind {kind}")
    return {"id": str(resource_id), "meta": meta, "extension": ext, **res}


def render_patient(
    patient_id: UUID,
    *,
    identifiers: list[tuple[str, str]],
    demographics: dict[str, Any] | None,
    birth_date: str | None,
    sex: str | None,
) -> dict[str, Any]:
    """The regional Patient: one resident across institutions, with every linked identifier."""
    res: dict[str, Any] = {"resourceType": "Patient", "id": str(patient_id)}
    res["identifier"] = [
        {"system": system, "value": value,
         **({"type": {"text": "居民身份证"}} if system == RESIDENT_ID_SYSTEM else {})}
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

