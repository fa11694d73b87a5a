"""Canonical prescriptions and dispenses → FHIR R4 MedicationRequest and MedicationDispense
(renderers of projections/render.py)."""

from __future__ import annotations

from typing import Any

from domain.clinical import (
    MedicationDispensePayload,
    MedicationRequestPayload,
)
from projections.render_values import Ref, _concept, _quantity


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
