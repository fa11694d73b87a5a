"""FHIR R4 MedicationRequest and MedicationDispense → canonical payloads, with the Medication
they name resolved (the mappers of adapters/fhir_resources.py)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from pydantic import ValidationError

from adapters.fhir_context import Context
from adapters.fhir_values import (
    INTENTS,
    PEOPLE,
    Pairs,
    _coded,
    _compact,
    _days,
    _first,
    _quantity,
    _text,
)


def _medication(r: Any, ctx: Context) -> dict[str, str] | None:
    """The coded drug of a request or dispense, following medicationReference when given."""
    if r.medicationCodeableConcept is not None:
        return _coded(ctx, r.medicationCodeableConcept, "medicationCodeableConcept")
    target, why = ctx.follow(r.medicationReference, ("Medication",))
    entry = target.entry if target is not None else None
    if entry is None:
        ctx.bad(
            "fhir.medication_unresolved",
            f"medicationReference {why or 'is empty'}; the "
            "drug's code is needed: send the Medication in the document or contained",
            "medicationReference",
        )
        return None
    if entry.resource is None:  # a Medication of the document or a directory: read it now
        try:
            entry.resource = Medication.model_validate(entry.raw)
        except (ValidationError, KeyError, TypeError, AttributeError):
            ctx.bad(
                "fhir.medication_invalid",
                f"the Medication it refers to ({entry.path}) is not valid FHIR R4",
                "medicationReference",
            )
            return None
    return _coded(ctx, entry.resource.code, "medicationReference (the Medication's code)")


def _frequency(timing: Any) -> str | None:
    if timing is None:
        return None
    if timing.code is not None and (timing.code.text or timing.code.coding):
        return _text(timing.code) or next((c.code for c in timing.code.coding if c.code), None)
    rep = timing.repeat
    if rep is None or rep.frequency is None or rep.period is None or not rep.periodUnit:
        return None
    return f"{rep.frequency}/{rep.period.normalize():f}{rep.periodUnit}"[:128]  # 2/1d: twice a day


def _medication_request(r: MedicationRequest, ctx: Context) -> Pairs:
    dosage, supply = _first(r.dosageInstruction), r.dispenseRequest
    dose = _first(dosage.doseAndRate) if dosage else None
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "medication": _medication(r, ctx),
                    "status": r.status,
                    "intent": INTENTS.get(r.intent or "", r.intent),
                    "authored": ctx.time(r.authoredOn, "authoredOn", required=True),
                    "dosage_text": dosage.text if dosage else None,
                    "dose": _quantity(dose.doseQuantity) if dose else None,
                    "route": ctx.first_coding(dosage.route) if dosage else None,
                    "frequency": _frequency(dosage.timing) if dosage else None,
                    "quantity": _quantity(supply.quantity) if supply else None,
                    "duration_days": _days(supply.expectedSupplyDuration) if supply else None,
                    "requester": ctx.display(r.requester, "requester", PEOPLE),
                    "encounter": ctx.link(r.encounter, "Encounter", "encounter"),
                }
            ),
        )
    ]


def _medication_dispense(d: MedicationDispense, ctx: Context) -> Pairs:
    dosage = _first(d.dosageInstruction)
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": ctx.patient(),
                    "medication": _medication(d, ctx),
                    "status": d.status,
                    "handed_over": ctx.time(d.whenHandedOver, "whenHandedOver"),
                    "quantity": _quantity(d.quantity),
                    "days_supply": _days(d.daysSupply),
                    "dosage_text": dosage.text if dosage else None,
                    "prescription": ctx.link(
                        _first(d.authorizingPrescription),
                        "MedicationRequest",
                        "authorizingPrescription[0]",
                    ),
                }
            ),
        )
    ]
