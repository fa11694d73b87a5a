"""Value objects every kind of item shares: who the item is about, codes, quantities.

Plain pydantic models (frozen, no extra fields), so the gateway validates them on its hot path.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.errors import InvalidResidentId
from domain.resident_id import parse_resident_id

# HL7 v3 PurposeOfUse codes the exchange understands.
PURPOSES = ("TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "PATRQT", "HLEGAL")

Text = Annotated[str, Field(min_length=1, max_length=500)]
ShortText = Annotated[str, Field(min_length=1, max_length=128)]
InstitutionCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientRef(_Model):
    """Who an item is about, by any identifier the sender holds.

    ``resident_id`` is the GB 11643 number; ``mrn`` is the SENDING institution's own medical
    record number; ``health_card`` the resident health card (居民健康卡) number. At least one.
    Without a resident ID the exchange resolves the others through the regional index, and a
    patient it has never seen (a newborn, a foreigner) gets a temporary identity that a later
    item naming both, or a merge, links to the resident.
    """

    resident_id: str | None = None
    mrn: ShortText | None = None
    health_card: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{6,32}$")] | None = None

    @field_validator("resident_id")
    @classmethod
    def _valid_resident_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        checked = _checked_resident_id(value)
        if isinstance(checked, tuple):  # the message names the rule, never the number
            raise PydanticCustomError(*checked)
        return checked

    @model_validator(mode="after")
    def _some_identifier(self) -> PatientRef:
        if self.resident_id is None and self.mrn is None and self.health_card is None:
            raise PydanticCustomError(
                "patient.no_identifier", "name the patient by resident_id, mrn or health_card"
            )
        return self


@lru_cache(maxsize=65_536)
def _checked_resident_id(value: str) -> str | tuple[str, str]:
    """The normalised number, or (code, message): one patient's items repeat their number."""
    try:
        return parse_resident_id(value).value
    except InvalidResidentId as exc:
        return exc.code, exc.message


class Coding(_Model):
    system: ShortText
    code: ShortText
    display: Text | None = None
    version: ShortText | None = None


class Quantity(_Model):
    """A measured amount. ``unit`` may be absent: FHIR allows a unitless quantity (a pH, an
    INR, a ratio, a count of tablets)."""

    value: Decimal
    unit: ShortText | None = None
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
