"""Entries and codings the data-category tests share: an entry of any kind with its codes, a
coding, a diagnosis. Every payload is a real model from parse_payload; synthetic data only;
not collected as tests."""

from __future__ import annotations

from typing import Any

from domain.categories import (
    categories_of,
)
from domain.clinical import parse_payload

RID = "11010519491231002X"
AT = "2026-11-01T09:00:00+08:00"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
LOCAL = "urn:county-hie:local-code"


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def entry(kind: str, code: dict[str, Any] | None = None, **extra: Any) -> Any:
    """A valid payload of ``kind`` whose main coding is ``code``, parsed by the real model."""
    code = code or coding(LOCAL, "X1", "普通项目")
    body: dict[str, Any] = {
        "patient": {"name": "王秀英", "gender": "female"},
        "encounter": {
            "encounter_class": "outpatient",
            "status": "finished",
            "start": AT,
            "department": "全科",
            "reason": [code],
        },
        "condition": {"code": code},
        "observation": {"code": code, "status": "final", "category": "laboratory", "effective": AT},
        "medication_request": {"medication": code, "status": "active", "authored": AT},
        "medication_dispense": {"medication": code, "status": "completed"},
        "procedure": {"code": code, "status": "completed"},
        "immunization": {"vaccine": code, "status": "completed", "occurrence": AT},
        "allergy": {"substance": code},
        "document": {
            "type": code,
            "title": "出院小结",
            "created": AT,
            "content_type": "application/pdf",
            "sha256": "0" * 64,
            "size": 10,
        },
    }[kind]
    return parse_payload(kind, {"patient": {"resident_id": RID}, **body, **extra})


def diagnosis(code: str, system: str = ICD10, display: str = "某诊断") -> tuple[str, ...]:
    return categories_of("condition", entry("condition", coding(system, code, display)))
