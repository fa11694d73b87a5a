"""FHIR R4 resources → canonical payloads: the table of one mapper per resource type (for
adapters/fhir.py). The mappers live in modules named for the resources they take:
adapters/fhir_clinical.py, fhir_medications.py, fhir_documents.py and fhir_referrals.py.

A mapper returns ``(source_id, payload)`` pairs: usually one, none for a resource whose content
is sent another way (a note on ``ctx`` says which), several for an Observation with components
(each component its own observation, ``<Observation/id>#<n>``). It reports what is wrong on
``ctx``; the caller leaves the resource out whole when anything is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure

from adapters.fhir_clinical import (
    _allergy,
    _condition,
    _encounter,
    _immunization,
    _observation,
    _patient,
    _procedure,
)
from adapters.fhir_consent import _consent
from adapters.fhir_context import Context
from adapters.fhir_documents import _diagnostic_report, _document_reference
from adapters.fhir_medications import _medication_dispense, _medication_request
from adapters.fhir_referrals import REFERRAL_MAPPERS
from adapters.fhir_values import Pairs

Mapper = Callable[[Any, Context], Pairs]
MAPPERS: dict[str, tuple[str, Mapper, Any]] = {
    "Patient": ("patient", _patient, Patient),
    "Encounter": ("encounter", _encounter, Encounter),
    "Condition": ("condition", _condition, Condition),
    "Observation": ("observation", _observation, Observation),
    "MedicationRequest": ("medication_request", _medication_request, MedicationRequest),
    "MedicationDispense": ("medication_dispense", _medication_dispense, MedicationDispense),
    "Procedure": ("procedure", _procedure, Procedure),
    "Immunization": ("immunization", _immunization, Immunization),
    "AllergyIntolerance": ("allergy", _allergy, AllergyIntolerance),
    "DocumentReference": ("document", _document_reference, DocumentReference),
    "DiagnosticReport": ("document", _diagnostic_report, DiagnosticReport),
    "Consent": ("consent", _consent, Consent),
    **REFERRAL_MAPPERS,  # ServiceRequest (a referral) and Task (a step of one)
}
