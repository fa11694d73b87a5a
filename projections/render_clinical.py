"""Canonical encounters, conditions, observations, procedures, immunizations, allergies and
documents → FHIR R4 JSON (renderers of projections/render.py)."""

from __future__ import annotations

from typing import Any

from domain.clinical import (
    AllergyPayload,
    ConditionPayload,
    DocumentPayload,
    EncounterPayload,
    ImmunizationPayload,
    ObservationPayload,
    ProcedurePayload,
)
from projections.render_values import Ref, _concept, _quantity

_ENCOUNTER_CLASS = {
    "outpatient": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
    "home-health": ("HH", "home health"),
    "field": ("FLD", "field"),
    "observation": ("OBSENC", "observation encounter"),
    "pre-admission": ("PRENC", "pre-admission"),
    "short-stay": ("SS", "short stay"),
    "virtual": ("VR", "virtual"),
}


def _encounter(p: EncounterPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    code, display = _ENCOUNTER_CLASS[p.encounter_class]
    period = {"start": p.start.isoformat()} if p.start else {}
    if p.end:
        period["end"] = p.end.isoformat()
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": p.status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": code,
            "display": display,
        },
        "subject": subject,
        **({"period": period} if period else {}),
    }
    if p.department:
        res["serviceType"] = {"text": p.department}
    if p.reason:
        res["reasonCode"] = [_concept(c) for c in p.reason]
    hospitalization: dict[str, Any] = {}
    if p.admit_source:
        hospitalization["admitSource"] = {"text": p.admit_source}
    if p.discharge_disposition:
        hospitalization["dischargeDisposition"] = {"text": p.discharge_disposition}
    if hospitalization:
        res["hospitalization"] = hospitalization
    if p.attending:
        res["participant"] = [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                            }
                        ]
                    }
                ],
                "individual": {"display": p.attending},
            }
        ]
    return res


def _condition(p: ConditionPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": p.clinical_status,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": p.verification_status,
                }
            ]
        },
        "code": _concept(p.code),
        "subject": subject,
        **enc(p.encounter),
    }
    if p.onset:
        res["onsetDateTime"] = p.onset.isoformat()
    if p.recorded:
        res["recordedDate"] = p.recorded.isoformat()
    return res


def _observation(p: ObservationPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Observation", "status": p.status}
    if p.category:
        res["category"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": p.category,
                    }
                ]
            }
        ]
    res |= {
        "code": _concept(p.code),
        "subject": subject,
        **enc(p.encounter),
    }
    if p.effective_end and p.effective:
        res["effectivePeriod"] = {
            "start": p.effective.isoformat(),
            "end": p.effective_end.isoformat(),
        }
    elif p.effective:
        res["effectiveDateTime"] = p.effective.isoformat()
    if p.issued:
        res["issued"] = p.issued.isoformat()
    if p.value_quantity:
        res["valueQuantity"] = _quantity(p.value_quantity)
    elif p.value_string:
        res["valueString"] = p.value_string
    elif p.value_coding:
        res["valueCodeableConcept"] = _concept(p.value_coding)
    if p.interpretation:
        res["interpretation"] = [_concept(p.interpretation)]
    if p.reference_range:
        rr: dict[str, Any] = {}
        if p.reference_range.low:
            rr["low"] = _quantity(p.reference_range.low)
        if p.reference_range.high:
            rr["high"] = _quantity(p.reference_range.high)
        if p.reference_range.text:
            rr["text"] = p.reference_range.text
        res["referenceRange"] = [rr]
    return res


def _procedure(p: ProcedurePayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Procedure",
        "status": p.status,
        "code": _concept(p.code),
        "subject": subject,
        **enc(p.encounter),
    }
    if p.performed:
        res["performedDateTime"] = p.performed.isoformat()
    if p.body_site:
        res["bodySite"] = [_concept(p.body_site)]
    if p.performer:
        res["performer"] = [{"actor": {"display": p.performer}}]
    return res


def _immunization(p: ImmunizationPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Immunization",
        "status": p.status,
        "vaccineCode": _concept(p.vaccine),
        "patient": subject,
        "occurrenceDateTime": p.occurrence.isoformat(),
    }
    if p.lot_number:
        res["lotNumber"] = p.lot_number
    if p.manufacturer:
        res["manufacturer"] = {"display": p.manufacturer}
    if p.site:
        res["site"] = _concept(p.site)
    if p.route:
        res["route"] = _concept(p.route)
    if p.dose_number is not None:
        res["protocolApplied"] = [{"doseNumberPositiveInt": p.dose_number}]
    return res


def _allergy(p: AllergyPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": p.clinical_status,
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": p.verification_status,
                }
            ]
        },
        "code": _concept(p.substance),
        "patient": subject,
    }
    if p.category:
        res["category"] = [p.category]
    if p.criticality:
        res["criticality"] = p.criticality
    if p.recorded:
        res["recordedDate"] = p.recorded.isoformat()
    if p.reactions:
        res["reaction"] = [{"manifestation": [_concept(c) for c in p.reactions]}]
    return res


def _document(p: DocumentPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    attachment: dict[str, Any] = {
        "contentType": p.content_type,
        "title": p.title,
        "size": p.size,
        "creation": p.created.isoformat(),
        # FHIR's Attachment.hash is SHA-1; the SHA-256 the sender signed is kept as an extension.
        "extension": [
            {"url": "urn:county-hie:fhir:StructureDefinition:sha256", "valueString": p.sha256}
        ],
    }
    if p.data is not None:
        attachment["data"] = p.data
    res: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": _concept(p.type),
        "subject": subject,
        "date": p.created.isoformat(),
        "content": [{"attachment": attachment}],
    }
    if p.author:
        res["author"] = [{"display": p.author}]
    if p.encounter:
        res["context"] = {"encounter": [enc(p.encounter)["encounter"]]}
    return res
