"""A research extract names nobody: identifiers, names, contacts and free text go, ids and
references become the project's pseudonyms, dates move by the patient's shift (intervals
kept), and two projects' extracts share neither ids nor dates."""

from __future__ import annotations

from datetime import date
from uuid import uuid4

import orjson

from exchange.api.deidentify import Deidentifier
from tests.factories import resident

PATIENT = uuid4()


def observation(effective: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": "5b1f5cbe-6d8f-4c2b-9a57-6f2a2f0b9c11",
        "identifier": [{"system": "urn:county-hie:mrn:county", "value": "MRN-1"}],
        "subject": {"reference": f"Patient/{PATIENT}", "display": "李建国"},
        "encounter": {"reference": "Encounter/8d0e1a7e-5a55-4b5e-9d35-1f0c1d1c7a21"},
        "effectiveDateTime": effective,
        "note": [{"text": "患者李建国，电话 13800000000"}],
        "text": {"status": "generated", "div": "<div>李建国</div>"},
        "code": {"text": "收缩压", "coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "valueQuantity": {"value": 148, "unit": "mm[Hg]"},
    }


def test_nothing_that_names_the_patient_is_left() -> None:
    rid = resident(3)
    patient = {
        "resourceType": "Patient",
        "id": str(PATIENT),
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": rid}],
        "name": [{"text": "李建国"}],
        "telecom": [{"system": "phone", "value": "13800000000"}],
        "address": [{"text": "东城镇桃源村 3 组"}],
        "gender": "male",
        "birthDate": "1958-03-14",
    }
    d = Deidentifier(b"salt-of-project-a", PATIENT)
    text = orjson.dumps([d.resource(patient), d.resource(observation("2026-11-02T08:00:00+08:00"))])
    for leaked in (rid, "李建国", "13800000000", "桃源村", "MRN-1", str(PATIENT), "1958-03-14"):
        assert leaked.encode() not in text
    shown = d.resource(observation("2026-11-02T08:00:00+08:00"))
    assert shown["valueQuantity"] == {"value": 148, "unit": "mm[Hg]"}  # the science stays
    assert shown["code"]["coding"][0]["code"] == "8480-6"
    assert shown["subject"] == {"reference": f"Patient/{d.pseudonym(str(PATIENT))}"}


def test_dates_move_together_for_one_patient_and_differ_between_projects() -> None:
    a = Deidentifier(b"salt-of-project-a", PATIENT)
    first, second = (
        a.resource(observation(day))["effectiveDateTime"] for day in ("2026-01-01", "2026-03-01")
    )
    assert first != "2026-01-01"
    gap = date.fromisoformat(second) - date.fromisoformat(first)
    assert gap.days == (date(2026, 3, 1) - date(2026, 1, 1)).days
    b = Deidentifier(b"salt-of-project-b", PATIENT)
    assert a.pseudonym(str(PATIENT)) != b.pseudonym(str(PATIENT))
    assert a.shift != b.shift or a.pseudonym("x") != b.pseudonym("x")
    # Reduced precision stays reduced.
    assert len(a.resource(observation("2026-05"))["effectiveDateTime"]) == 7


def test_bundle_entries_are_rewritten_whole() -> None:
    d = Deidentifier(b"salt", PATIENT)
    entry = {
        "fullUrl": "urn:uuid:5b1f5cbe-6d8f-4c2b-9a57-6f2a2f0b9c11",
        "resource": observation("2026-11-02"),
        "search": {"mode": "match"},
    }
    [out] = orjson.loads(b"[" + d.entries(orjson.dumps(entry) + b"," + orjson.dumps(entry)) + b"]")[
        :1
    ]
    assert out["fullUrl"] == "urn:uuid:" + d.pseudonym("5b1f5cbe-6d8f-4c2b-9a57-6f2a2f0b9c11")
    assert out["resource"]["id"] == d.pseudonym("5b1f5cbe-6d8f-4c2b-9a57-6f2a2f0b9c11")
    assert out["search"] == {"mode": "match"}
