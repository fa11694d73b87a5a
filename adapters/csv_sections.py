"""The payload of each kind of mapping section (patient, encounter, condition, observation,
medication_request, immunization) made from one CSV row (for adapters/csv_export.py). Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.csv_mapping import (
    DEFAULT_GENDERS,
    CodeEntry,
    ConditionSection,
    EncounterSection,
    ImmunizationSection,
    MedicationRequestSection,
    ObservationSection,
    PatientSection,
)
from adapters.csv_row import _NUMBER, Row, _compact

_BETWEEN = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|~|～|—|–|至)\s*(\d+(?:\.\d+)?)")
_BOUND = re.compile(r"(<=|>=|<|>|≤|≥|＜|＞)\s*(\d+(?:\.\d+)?)")


def _patient_payload(row: Row, s: PatientSection) -> dict[str, Any]:
    gender = "unknown"
    if (value := row.text(s.gender)) is not None:
        genders = {**DEFAULT_GENDERS, **s.gender_values}
        if value not in genders:
            row.bad(
                "csv.gender", "not a gender the mapping knows: add it to gender_values", s.gender
            )
        gender = genders.get(value, "unknown")
    return {"name": row.need(s.name), "gender": gender, "birth_date": row.day(s.birth_date)}


def _encounter(row: Row, s: EncounterSection) -> dict[str, Any]:
    reason = row.coded(s.reason, s.codes, required=False) if s.codes else None
    return {
        "encounter_class": s.encounter_class,
        "status": s.status,
        "start": row.when(s.start, required=True),
        "end": row.when(s.end),
        "department": row.text(s.department),
        "attending": row.text(s.attending),
        "reason": [reason[1]] if reason else [],
    }


def _condition(row: Row, s: ConditionSection) -> dict[str, Any]:
    coded = row.coded(s.code, s.codes)
    return {
        "code": coded and coded[1],
        "clinical_status": s.clinical_status,
        "verification_status": s.verification_status,
        "onset": row.day(s.onset),
        "recorded": row.when(s.recorded),
    }


def _observation(row: Row, s: ObservationSection) -> dict[str, Any]:
    coded = row.coded(s.code, s.codes)
    entry, coding = coded or (CodeEntry(code="-"), None)
    raw = row.need(s.value)
    payload = {
        "code": coding,
        "status": s.status,
        "effective": row.when(s.effective, required=True),
        "category": entry.category or s.category,
    }
    # A coded item with a unit is quantitative: "l20" there is a typing error, not words.
    if raw is not None and (entry.unit or _NUMBER.fullmatch(raw)):
        quantity = row.quantity(s.value, s.unit, entry.unit)
        payload["value_quantity"] = quantity
        if quantity is not None:
            payload["reference_range"] = _range(row, s, entry, quantity)
    else:  # "阴性", "+", "<0.1": a result in words, kept as written, as is its range
        payload["value_string"] = raw
        text = row.text(s.range)
        payload["reference_range"] = {"text": text} if text else None
    return payload


def _range(
    row: Row, s: ObservationSection, entry: CodeEntry, quantity: dict[str, Any]
) -> dict[str, Any] | None:
    low, high, text = row.number(s.low), row.number(s.high), row.text(s.range)
    if text is not None and low is None and high is None:
        if between := _BETWEEN.fullmatch(text):
            low, high = Decimal(between[1]), Decimal(between[2])
        elif bound := _BOUND.fullmatch(text):
            if bound[1] in ("<", "<=", "≤", "＜"):
                high = Decimal(bound[2])
            else:
                low = Decimal(bound[2])
        else:  # "阴性" or the like: the range as the lab wrote it
            return {"text": text}
    if text is None and low is None and high is None:
        low, high = entry.low, entry.high
    if low is None and high is None:
        return None
    unit = {k: quantity[k] for k in ("unit", "system", "code")}
    return _compact(
        {
            "low": None if low is None else {"value": str(low), **unit},
            "high": None if high is None else {"value": str(high), **unit},
        }
    )


def _medication_request(row: Row, s: MedicationRequestSection) -> dict[str, Any]:
    coded = row.coded(s.medication, s.codes)
    return {
        "medication": coded and coded[1],
        "status": s.status,
        "intent": s.intent,
        "authored": row.when(s.authored, required=True),
        "dosage_text": row.text(s.dosage_text),
        "dose": row.quantity(s.dose, s.dose_unit),
        "frequency": row.text(s.frequency),
        "quantity": row.quantity(s.quantity, s.quantity_unit),
        "duration_days": row.integer(s.duration_days),
        "requester": row.text(s.requester),
    }


def _immunization(row: Row, s: ImmunizationSection) -> dict[str, Any]:
    coded = row.coded(s.vaccine, s.codes)
    return {
        "vaccine": coded and coded[1],
        "status": s.status,
        "occurrence": row.when(s.occurrence, required=True),
        "lot_number": row.text(s.lot_number),
        "dose_number": row.integer(s.dose_number),
        "manufacturer": row.text(s.manufacturer),
    }


MAPPERS: dict[str, Callable[[Row, Any], dict[str, Any]]] = {
    "patient": _patient_payload,
    "encounter": _encounter,
    "condition": _condition,
    "observation": _observation,
    "medication_request": _medication_request,
    "immunization": _immunization,
}
