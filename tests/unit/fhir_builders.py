"""FHIR R4 resources the FHIR adapter's tests share: one visit (patient, encounter, diagnosis,
lab result), a whole chart (prescriptions, a dispense, a procedure, a vaccine, an allergy, a
discharge summary), the bundle that carries them, and checks on what the adapter returns.
Synthetic data only; not collected as tests."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import date
from decimal import Decimal
from typing import Any

from domain.clinical import Item, parse_payload
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from domain.resident_id import make_resident_id

INSTITUTION = "dongcheng-thc"
HEALTH_CARD = "urn:county-hie:health-card"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
RID = make_resident_id("341122", date(1956, 4, 2), 124)  # synthetic; even sequence: female
NAME = "王秀英"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def patient(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": RESIDENT_ID_SYSTEM, "value": RID},
            {"system": mrn_system(INSTITUTION), "value": "MR000123"},
        ],
        "name": [{"use": "official", "family": "王", "given": ["秀英"]}],
        "gender": "female",
        "birthDate": "1956-04-02",
        **changes,
    }


def encounter(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "serviceType": {"text": "全科门诊"},
        "subject": {"reference": "urn:uuid:pat-1"},
        "period": {"start": "2026-03-02T09:10:00+08:00", "end": "2026-03-02T09:30:00+08:00"},
        "reasonCode": [{"coding": [{"system": ICD10, "code": "I10", "display": "原发性高血压"}]}],
        **changes,
    }


def condition(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": {
            "coding": [
                {"system": ICD10, "version": "2019", "code": "I10", "display": "原发性高血压"}
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "onsetDateTime": "2019-06-01",
        "recordedDate": "2026-03-02T09:25:00+08:00",
        **changes,
    }


def observation(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "糖化血红蛋白"}]
        },
        "subject": {"reference": "urn:uuid:pat-1"},
        "encounter": {"reference": "urn:uuid:enc-1"},
        "effectiveDateTime": "2026-03-02T09:20:00+08:00",
        "valueQuantity": {
            "value": Decimal("7.20"),
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
        "referenceRange": [
            {
                "low": {"value": Decimal("4.0"), "unit": "%"},
                "high": {"value": Decimal("6.0"), "unit": "%"},
            }
        ],
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "H",
                    }
                ]
            }
        ],
        **changes,
    }


def bundle(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    urls = {"Patient": "urn:uuid:pat-1", "Encounter": "urn:uuid:enc-1"}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": urls.get(r["resourceType"], f"urn:uuid:other-{n}"),
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for n, r in enumerate(resources)
        ],
    }


def visit() -> dict[str, Any]:
    return bundle(patient(), encounter(), condition(), observation())


def json_bytes(doc: dict[str, Any]) -> bytes:
    """FHIR JSON text with decimals written exactly as given (7.20 stays 7.20)."""
    text = json.dumps(doc, ensure_ascii=False, default=lambda d: f"@@{d}@@")
    return re.sub(r'"@@([^@]+)@@"', r"\1", text).encode()


def by_kind(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["kind"]: item for item in items}


def assert_valid(items: list[dict[str, Any]]) -> None:
    for item in items:
        Item.model_validate(item)
        parse_payload(item["kind"], item["payload"])


def assert_no_patient_data(report: Any) -> None:
    for problem in report.problems:
        assert RID not in str(problem) and NAME not in str(problem)


# A whole chart: prescriptions, a dispense, a procedure, a vaccine, an allergy, a document ------

DISCHARGE = "出院小结：血压控制平稳，出院后继续服用硝苯地平缓释片，每日一次。".encode()
DISCHARGE_SHA256 = hashlib.sha256(DISCHARGE).hexdigest()
SNOMED = "http://snomed.info/sct"
STAFF = "urn:county-hie:staff:dongcheng-thc"  # the centre's own staff numbers
HOSPITAL_OID = "urn:oid:1.2.156.112604.1.1"  # an (invented) organisation registry for tests
REGISTERED = {f"{HOSPITAL_OID}|12341122000001": "county-hospital"}


def medication_request(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "rx1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "urn:uuid:pat-1"},
        "encounter": {"reference": "Encounter/e1"},
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2026-03-02T09:28:00+08:00",
        "requester": {"reference": f"Practitioner?identifier={STAFF}|D017"},
        "dosageInstruction": [
            {
                "text": "每日一次，每次1片，口服",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "口服"}]},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "片"}}],
            }
        ],
        "dispenseRequest": {
            "quantity": {"value": 30, "unit": "片"},
            "expectedSupplyDuration": {"value": 30, "unit": "天", "code": "d"},
        },
        **changes,
    }


def medication(**changes: Any) -> dict[str, Any]:
    # A local drug code with no system: it is this centre's own code.
    return {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"code": "YP0317", "display": "硝苯地平缓释片"}]},
        **changes,
    }


def dispense(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationDispense",
        "id": "md1",
        "status": "completed",
        "contained": [medication(id="m")],
        "medicationReference": {"reference": "#m"},
        "subject": {"reference": "Patient/p1"},
        "authorizingPrescription": [{"reference": "MedicationRequest/rx1"}],
        "quantity": {"value": 30, "unit": "片"},
        "daysSupply": {"value": 30, "unit": "天", "code": "d"},
        "whenHandedOver": "2026-03-02T09:40:00+08:00",
        **changes,
    }


def procedure(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": "pr1",
        "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": "29303009", "display": "心电图检查"}]},
        "subject": {"reference": "urn:uuid:pat-1"},
        "encounter": {"reference": "urn:uuid:enc-1"},
        "performedDateTime": "2026-03-02T09:15:00+08:00",
        "performer": [
            {"actor": {"reference": f"Organization?identifier={HOSPITAL_OID}|12341122000001"}}
        ],
        **changes,
    }


def immunization(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": "im1",
        "status": "completed",
        "vaccineCode": {
            "coding": [
                {"system": "http://hl7.org/fhir/sid/cvx", "code": "08", "display": "乙肝疫苗"}
            ]
        },
        "patient": {"reference": "urn:uuid:pat-1"},
        "occurrenceDateTime": "2026-03-02T09:35:00+08:00",
        "lotNumber": "B202601",
        "protocolApplied": [{"doseNumberPositiveInt": 2}],
        **changes,
    }


def allergy(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": "al1",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "category": ["medication"],
        "criticality": "high",
        "code": {"coding": [{"code": "QMS", "display": "青霉素"}]},
        "patient": {"reference": "Patient/p1"},
        "reaction": [
            {
                "manifestation": [
                    {"coding": [{"system": SNOMED, "code": "271807003", "display": "皮疹"}]}
                ]
            }
        ],
        "recordedDate": "2026-03-02T09:12:00+08:00",
        **changes,
    }


def document(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": "doc1",
        "status": "current",
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}
            ]
        },
        "description": "出院小结",
        "subject": {"reference": "urn:uuid:pat-1"},
        "date": "2026-03-05T10:00:00+08:00",
        "author": [{"reference": "Practitioner/li"}],
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(DISCHARGE).decode(),
                    "hash": base64.b64encode(hashlib.sha1(DISCHARGE).digest()).decode(),
                    "size": len(DISCHARGE),
                }
            }
        ],
        "context": {"encounter": [{"reference": "Encounter/e1"}]},
        **changes,
    }


def doctor() -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": "li",
        "identifier": [{"system": STAFF, "value": "D017"}],
        "name": [{"text": "李建国"}],
    }


def chart() -> dict[str, Any]:
    return bundle(
        patient(),
        encounter(),
        medication(),
        medication_request(),
        medication_request(
            id="rx2",
            medicationReference=None,
            medicationCodeableConcept={
                "coding": [
                    {"system": "http://www.whocc.no/atc", "code": "C08CA05", "display": "硝苯地平"}
                ]
            },
        ),
        dispense(),
        procedure(),
        immunization(),
        allergy(),
        document(),
        doctor(),
    )


CHART_KINDS = [
    "patient",
    "encounter",
    "medication_request",
    "medication_request",
    "medication_dispense",
    "procedure",
    "immunization",
    "allergy",
    "document",
]


def attachment(**fields: Any) -> dict[str, Any]:
    return document(content=[{"attachment": {"contentType": "application/pdf", **fields}}])


def report_resource(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": "rep1",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11524-6", "display": "心电图报告"}]
        },
        "subject": {"reference": "urn:uuid:pat-1"},
        "issued": "2026-03-02T09:50:00+08:00",
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode("窦性心律".encode()).decode()}
        ],
        **changes,
    }
