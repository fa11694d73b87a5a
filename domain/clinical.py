"""Canonical clinical events: what one item of a submission envelope may say.

These plain pydantic models are what the gateway validates on the hot path (FHIR parsing
happens in the adapters, on the sender's side). Each item names its patient by resident ID;
payloads keep codes with their system (and version where the sender gives one).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.errors import InvalidResidentId
from domain.resident_id import parse_resident_id

KINDS = ("patient", "encounter", "condition", "observation", "consent")
Kind = Literal["patient", "encounter", "condition", "observation", "consent"]

# HL7 v3 PurposeOfUse codes the exchange understands.
PURPOSES = ("TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "PATRQT", "HLEGAL")

Text = Annotated[str, Field(min_length=1, max_length=500)]
ShortText = Annotated[str, Field(min_length=1, max_length=128)]
InstitutionCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientRef(_Model):
    resident_id: str

    @field_validator("resident_id")
    @classmethod
    def _valid_resident_id(cls, value: str) -> str:
        try:
            return parse_resident_id(value).value
        except InvalidResidentId as exc:
            # The message names the rule, never the number.
            raise PydanticCustomError(exc.code, exc.message) from None


class Coding(_Model):
    system: ShortText
    code: ShortText
    display: Text | None = None
    version: ShortText | None = None


class Quantity(_Model):
    value: Decimal
    unit: ShortText
    system: ShortText | None = "http://unitsofmeasure.org"
    code: ShortText | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise PydanticCustomError("quantity.not_finite", "quantity value must be a number")
        return value


class ReferenceRange(_Model):
    low: Quantity | None = None
    high: Quantity | None = None
    text: Text | None = None


class _PatientItem(_Model):
    patient: PatientRef


class PatientPayload(_PatientItem):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    gender: Literal["male", "female", "other", "unknown"]
    birth_date: date | None = None
    mrn: ShortText | None = None


class EncounterPayload(_PatientItem):
    encounter_class: Literal["outpatient", "inpatient", "emergency"]
    status: Literal["planned", "arrived", "in-progress", "finished", "cancelled"]
    start: AwareDatetime
    end: AwareDatetime | None = None
    department: Text | None = None
    reason: list[Coding] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _ends_after_start(self) -> EncounterPayload:
        if self.end is not None and self.end < self.start:
            raise PydanticCustomError("encounter.end_before_start", "end is before start")
        return self


class ConditionPayload(_PatientItem):
    code: Coding
    clinical_status: Literal[
        "active", "recurrence", "relapse", "inactive", "remission", "resolved"
    ] = "active"
    verification_status: Literal[
        "unconfirmed", "provisional", "differential", "confirmed", "refuted"
    ] = "confirmed"
    onset: date | None = None
    recorded: AwareDatetime | None = None
    encounter: ShortText | None = Field(default=None, description="source_id of the encounter")


class ObservationPayload(_PatientItem):
    code: Coding
    status: Literal["registered", "preliminary", "final", "amended", "corrected"]
    category: Literal["vital-signs", "laboratory", "survey", "exam", "social-history"] | None
    effective: AwareDatetime
    value_quantity: Quantity | None = None
    value_string: Text | None = None
    value_coding: Coding | None = None
    reference_range: ReferenceRange | None = None
    interpretation: Coding | None = None
    encounter: ShortText | None = None

    @model_validator(mode="after")
    def _one_value(self) -> ObservationPayload:
        given = [v for v in (self.value_quantity, self.value_string, self.value_coding) if v]
        if len(given) > 1:
            raise PydanticCustomError(
                "observation.values", "give at most one of value_quantity, value_string, value_coding"
            )
        return self


class ConsentPayload(_PatientItem):
    """A consent the patient (or guardian) signed at the recording institution."""

    consent_type: Literal["separate", "general"]
    scope: list[InstitutionCode | Literal["*"]] = Field(min_length=1, max_length=100)
    purposes: list[Literal[PURPOSES]] = Field(min_length=1)  # type: ignore[valid-type]
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None
    notice_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signed_by: Literal["patient", "guardian"] = "patient"

    @model_validator(mode="after")
    def _period(self) -> ConsentPayload:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise PydanticCustomError("consent.period", "valid_to must be after valid_from")
        return self


PAYLOAD_MODELS: dict[str, type[_PatientItem]] = {
    "patient": PatientPayload,
    "encounter": EncounterPayload,
    "condition": ConditionPayload,
    "observation": ObservationPayload,
    "consent": ConsentPayload,
}


class Item(_Model):
    """One canonical clinical event as it stands in an envelope."""

    source_id: Annotated[str, Field(pattern=r"^[^\s]{1,200}$")]
    kind: Kind
    payload: dict[str, Any]


def parse_payload(kind: str, payload: dict[str, Any]) -> _PatientItem:
    """Validate a payload for its kind (raises pydantic.ValidationError)."""
    return PAYLOAD_MODELS[kind].model_validate(payload)
