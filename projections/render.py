"""Canonical clinical items → FHIR R4 JSON, rendered once when the projection writes a row.

The read path assembles Bundles from these pre-rendered bytes (FHIR model serialisation is
too slow to run per request, DESIGN.md). Every resource says which institution submitted it:
``meta.source`` and a ``submitted-by`` extension naming the Organization. ``RENDERERS`` maps
each item kind to its renderer: adding a kind is one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson

from domain.clinical import (
    AllergyPayload,
    ConditionPayload,
    ConsentPayload,
    DocumentPayload,
    EncounterPayload,
    ImmunizationPayload,
    MedicationDispensePayload,
    MedicationRequestPayload,
    ObservationPayload,
    ProcedurePayload,
)
from domain.identity import RESIDENT_ID_SYSTEM
from domain.values import Coding, Quantity

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
    """Compact JSON, UTF-8 as it is (orjson: a fifth of the standard library's time here)."""
    return orjson.dumps(resource).decode()


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
    out: dict[str, Any] = {
        "value": float(q.value) if "." in str(q.value) else int(q.value),
        "unit": q.unit,
    }
    if q.system:
        out["system"] = q.system
    out["code"] = q.code or q.unit
    return out


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


Ref = dict[str, Any]


def _encounter(p: EncounterPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    code, display = _ENCOUNTER_CLASS[p.encounter_class]
    period = {"start": p.start.isoformat()}
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
        "period": period,
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
        "effectiveDateTime": p.effective.isoformat(),
    }
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


def _consent(p: ConsentPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {"coding": [{"system": "urn:county-hie:consent-type", "code": p.consent_type}]}
        ],
        "patient": subject,
        "policy": [{"uri": f"urn:sha256:{p.notice_sha256}"}],
        "provision": {
            "type": "permit",
            "period": {
                "start": p.valid_from.isoformat(),
                **({"end": p.valid_to.isoformat()} if p.valid_to else {}),
            },
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}
                for purpose in p.purposes
            ],
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"identifier": {"system": INSTITUTION_SYSTEM, "value": code}},
                }
                for code in p.scope
            ],
            **(
                {
                    "securityLabel": [
                        {"system": "urn:county-hie:data-category", "code": c} for c in p.categories
                    ]
                }
                if p.categories
                else {}
            ),
        },
    }
    return res


def _medication_request(p: MedicationRequestPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": p.status,
        "intent": p.intent,
        "medicationCodeableConcept": _concept(p.medication),
        "subject": subject,
        **enc(p.encounter),
        "authoredOn": p.authored.isoformat(),
    }
    if p.requester:
        res["requester"] = {"display": p.requester}
    dosage: dict[str, Any] = {}
    if p.dosage_text:
        dosage["text"] = p.dosage_text
    if p.frequency:
        dosage["timing"] = {"code": {"text": p.frequency}}
    if p.route:
        dosage["route"] = _concept(p.route)
    if p.dose:
        dosage["doseAndRate"] = [{"doseQuantity": _quantity(p.dose)}]
    if dosage:
        res["dosageInstruction"] = [dosage]
    supply: dict[str, Any] = {}
    if p.quantity:
        supply["quantity"] = _quantity(p.quantity)
    if p.duration_days is not None:
        supply["expectedSupplyDuration"] = {
            "value": p.duration_days,
            "unit": "d",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    if supply:
        res["dispenseRequest"] = supply
    return res


def _medication_dispense(p: MedicationDispensePayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "status": p.status,
        "medicationCodeableConcept": _concept(p.medication),
        "subject": subject,
    }
    if p.quantity:
        res["quantity"] = _quantity(p.quantity)
    if p.days_supply is not None:
        res["daysSupply"] = {
            "value": p.days_supply,
            "unit": "d",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    if p.handed_over:
        res["whenHandedOver"] = p.handed_over.isoformat()
    if p.dosage_text:
        res["dosageInstruction"] = [{"text": p.dosage_text}]
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
) -> dict[str, Any]:
    """The regional Patient: one resident across institutions, with every linked identifier."""
    res: dict[str, Any] = {"resourceType": "Patient", "id": str(patient_id)}
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
