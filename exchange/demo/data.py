"""Synthetic demo county data: residents and one FHIR R4 transaction Bundle per visit.

Everything is made up and deterministic (seeded ``random.Random``, no clock, no IO), so
generating again gives the same bundles and a resend is recognised as a repeat. The same
resident seen at two institutions gets different, plausible visits.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from domain.resident_id import make_resident_id

REGION = "341122"  # a county-level address code
CST = timezone(timedelta(hours=8))
FAMILY_NAMES = "王李张刘陈杨赵黄周吴"
GIVEN_NAMES = {
    "male": ["建国", "志强", "明", "伟", "国华", "德明", "军", "海涛"],
    "female": ["秀英", "丽华", "桂兰", "淑珍", "玉梅", "红霞", "芳", "春燕"],
}
DEPARTMENTS = ["全科门诊", "慢病门诊", "内科门诊", "老年病科"]

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
CONDITIONS = [
    ("I10", "原发性高血压"),
    ("E11.9", "2型糖尿病，无并发症"),
    ("J44.9", "慢性阻塞性肺疾病"),
    ("K29.7", "慢性胃炎"),
]
_NS = uuid.UUID("6f0c3a52-5d1e-4c8e-9a57-2b1c0e8f4d11")  # fixed: fullUrls stay stable


@dataclass(frozen=True)
class DemoResident:
    resident_id: str
    name: str
    gender: str
    birth_date: str


def demo_residents(count: int = 6, seed: int = 2026) -> list[DemoResident]:
    """``count`` synthetic residents; the first n are the same whatever the count."""
    rng = random.Random(seed)
    residents: list[DemoResident] = []
    taken: set[str] = set()
    while len(residents) < count:
        born = date(1940, 1, 1) + timedelta(
            days=rng.randrange((date(2015, 12, 31) - date(1940, 1, 1)).days)
        )
        gender = rng.choice(["male", "female"])
        # GB 11643: the sequence code is odd for men, even for women.
        sequence = rng.randrange(500) * 2 + (1 if gender == "male" else 0)
        rid = make_resident_id(REGION, born, sequence)
        name = rng.choice(FAMILY_NAMES) + rng.choice(GIVEN_NAMES[gender])
        if rid not in taken:
            taken.add(rid)
            residents.append(DemoResident(rid, name, gender, born.isoformat()))
    return residents


def demo_bundles(institution: str, residents: list[DemoResident]) -> list[dict[str, Any]]:
    """One transaction Bundle per resident: the resident's latest visit to ``institution``."""
    return [_bundle(institution, r) for r in residents]


def _bundle(institution: str, resident: DemoResident) -> dict[str, Any]:
    # Ids come from institution + resident rather than a list position, so that bundles made
    # from different slices of the residents never share an id. The hash only spreads
    # synthetic demo numbers; a real sender uses its own record ids.
    key = hashlib.sha256(f"{institution}|{resident.resident_id}".encode()).hexdigest()
    rng = random.Random(f"county-hie-demo|{key}")
    prefix = f"{institution.replace('_', '-')}-"
    start = datetime(2026, 1, 5, 8, tzinfo=CST) + timedelta(
        days=rng.randrange(280), minutes=15 * rng.randrange(34)
    )
    end = start + timedelta(minutes=rng.choice([10, 15, 20, 30]))
    when = start.isoformat()

    def entry(rtype: str, rid: str, resource: dict[str, Any]) -> dict[str, Any]:
        full_url = f"urn:uuid:{uuid.uuid5(_NS, f'{rtype}/{rid}')}"
        return {
            "fullUrl": full_url,
            "resource": {"resourceType": rtype, "id": rid, **resource},
            "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
        }

    patient = entry(
        "Patient",
        f"{prefix}pat-{key[:12]}",
        {
            "identifier": [
                {"system": RESIDENT_ID_SYSTEM, "value": resident.resident_id},
                {
                    "type": {"coding": [{"system": TERMINOLOGY + "v2-0203", "code": "MR"}]},
                    "system": mrn_system(institution),
                    "value": f"MR{int(key[:12], 16) % 10**8:08d}",
                },
            ],
            "name": [
                {
                    "use": "official",
                    "text": resident.name,
                    "family": resident.name[0],
                    "given": [resident.name[1:]],
                }
            ],
            "gender": resident.gender,
            "birthDate": resident.birth_date,
        },
    )
    subject = {"reference": patient["fullUrl"]}
    diagnoses = rng.sample(CONDITIONS, rng.choice([1, 2]))
    codings = [{"system": ICD10, "code": code, "display": text} for code, text in diagnoses]
    encounter = entry(
        "Encounter",
        f"{prefix}enc-{key[:12]}",
        {
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
                "display": "ambulatory",
            },
            "serviceType": {"text": rng.choice(DEPARTMENTS)},
            "subject": subject,
            "period": {"start": when, "end": end.isoformat()},
            "reasonCode": [{"coding": [codings[0]], "text": codings[0]["display"]}],
        },
    )
    visit = {"reference": encounter["fullUrl"]}
    conditions = [
        entry(
            "Condition",
            f"{prefix}dx-{key[:12]}-{n}",
            {
                "clinicalStatus": {
                    "coding": [{"system": TERMINOLOGY + "condition-clinical", "code": "active"}]
                },
                "verificationStatus": {
                    "coding": [
                        {"system": TERMINOLOGY + "condition-ver-status", "code": "confirmed"}
                    ]
                },
                "category": [
                    {
                        "coding": [
                            {
                                "system": TERMINOLOGY + "condition-category",
                                "code": "encounter-diagnosis",
                            }
                        ]
                    }
                ],
                "code": {"coding": [coding], "text": coding["display"]},
                "subject": subject,
                "encounter": visit,
                "recordedDate": when,
                "onsetDateTime": (
                    start.date() - timedelta(days=rng.randrange(60, 3650))
                ).isoformat(),
            },
        )
        for n, coding in enumerate(codings)
    ]
    observations = [
        entry(
            "Observation",
            f"{prefix}obs-{key[:12]}-{n}",
            {
                "status": "final",
                "subject": subject,
                "encounter": visit,
                "effectiveDateTime": when,
                **fields,
            },
        )
        for n, fields in enumerate(_measurements(rng, {c for c, _ in diagnoses}))
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [patient, encounter, *conditions, *observations],
    }


def _measurements(rng: random.Random, diagnoses: set[str]) -> list[dict[str, Any]]:
    """Blood pressure at every visit; glucose and HbA1c for diabetics (and some others)."""
    hypertensive = "I10" in diagnoses
    systolic = rng.randint(138, 172) if hypertensive else rng.randint(108, 138)
    diastolic = rng.randint(86, 104) if hypertensive else rng.randint(66, 88)
    found = [
        _observation("vital-signs", "8480-6", "收缩压", systolic, "mmHg", "mm[Hg]"),
        _observation("vital-signs", "8462-4", "舒张压", diastolic, "mmHg", "mm[Hg]"),
    ]
    diabetic = "E11.9" in diagnoses
    if diabetic or rng.random() < 0.3:
        glucose = round(rng.uniform(6.5, 11.5) if diabetic else rng.uniform(4.4, 6.0), 1)
        found.append(
            _observation(
                "laboratory", "1558-6", "空腹血糖", glucose, "mmol/L", "mmol/L", low=3.9, high=6.1
            )
        )
    if diabetic:
        hba1c = round(rng.uniform(6.2, 9.4), 1)
        found.append(
            _observation("laboratory", "4548-4", "糖化血红蛋白", hba1c, "%", "%", low=4.0, high=6.0)
        )
    return found


def _observation(
    category: str,
    loinc: str,
    display: str,
    value: float,
    unit: str,
    ucum: str,
    low: float | None = None,
    high: float | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "category": [
            {"coding": [{"system": TERMINOLOGY + "observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display},
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }
    if low is not None and high is not None:
        fields["referenceRange"] = [
            {
                "low": {"value": low, "unit": unit, "system": UCUM, "code": ucum},
                "high": {"value": high, "unit": unit, "system": UCUM, "code": ucum},
            }
        ]
        flag = "H" if value > high else "L" if value < low else "N"
        fields["interpretation"] = [
            {"coding": [{"system": TERMINOLOGY + "v3-ObservationInterpretation", "code": flag}]}
        ]
    return fields
