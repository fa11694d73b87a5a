"""Items that change who may read a patient's record, besides consents themselves.

- ``consent_withdrawal``: the patient withdraws a consent (PIPL Art. 15), at any institution;
  it counts from its ledger position on.
- ``consent_confirmation``: the patient confirms, through the patient portal, a consent an
  institution recorded that reaches beyond that institution (``needs_patient``); it counts
  in full from the confirmation's ledger position on.
- ``guardian``: a recorded guardian (监护人) of a child, whose consent stands for a child under
  14 (PIPL Art. 31).
- ``care_contract``: a family-doctor contract (家庭医生签约): the signing institution treats
  the patient for the contract's period (a care relationship).
- ``seal`` / ``unseal``: the record is sealed at once (病历封存) and readable only by the named
  persons until it is unsealed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from domain.categories import SENSITIVE
from domain.values import PatientRef, Text, _Model, _PatientItem

CONSENT_REFERENCE = r"^[A-Za-z0-9_-]{1,32}/[^\s]{1,200}$"


class ConsentWithdrawalPayload(_PatientItem):
    """``consent`` names the consent as ``<recording institution>/<its source_id>``."""

    consent: Annotated[str, Field(pattern=CONSENT_REFERENCE)]
    at: AwareDatetime
    reason: Text | None = None


class ConsentConfirmationPayload(_PatientItem):
    """``consent`` names the consent confirmed, as ``<recording institution>/<source_id>``."""

    consent: Annotated[str, Field(pattern=CONSENT_REFERENCE)]
    at: AwareDatetime


class SignedDocument(_Model):
    """The consent form the patient signed, as the recording institution keeps it: its
    SHA-256 and how it was signed (a scanned handwritten signature, an electronic signature
    under the Electronic Signature Law, a digital certificate)."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    method: Literal["handwritten-scan", "electronic-signature", "digital-certificate"]


RESEARCH = "HRESCH"


def needs_patient(
    institution: str, scope: tuple[str, ...], purposes: tuple[str, ...], categories: object
) -> bool:
    """Whether a consent an institution recorded opens more than that institution's own
    general reads for care — another institution or the whole consortium in its scope, a
    sensitive category, research — and so counts for that only once the patient confirmed
    it (portal) or the institution recorded the signed consent document."""
    named = tuple(categories) if isinstance(categories, (list, tuple)) else ()
    return (
        any(code != institution for code in scope)
        or any(c in SENSITIVE for c in named)
        or RESEARCH in purposes
    )


class GuardianPayload(_PatientItem):
    """``guardian`` is the guardian's identity (a resident ID: the consent names it too)."""

    guardian: PatientRef
    relationship: Literal["parent", "grandparent", "sibling", "legal_guardian", "other"]
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None

    @model_validator(mode="after")
    def _named_by_resident_id(self) -> GuardianPayload:
        if self.guardian.resident_id is None:
            raise PydanticCustomError("guardian.resident_id", "name the guardian by resident_id")
        return self


# A family-doctor contract (家庭医生签约服务) is signed for a year and renewed.
MAX_CONTRACT = timedelta(days=366)


class CareContractPayload(_PatientItem):
    """A family-doctor contract with the signing institution."""

    doctor: Text
    team: Text | None = None
    valid_from: AwareDatetime
    valid_to: AwareDatetime

    @model_validator(mode="after")
    def _period(self) -> CareContractPayload:
        if self.valid_to <= self.valid_from:
            raise PydanticCustomError("care_contract.period", "valid_to must be after valid_from")
        if self.valid_to - self.valid_from > MAX_CONTRACT:
            raise PydanticCustomError(
                "care_contract.too_long",
                "a family-doctor contract runs a year at most; record its renewal as a new one",
            )
        return self


class SealPayload(_PatientItem):
    """Seal the patient's record: only ``readers`` may read it until the sealing institution
    unseals it; every other read is refused and raises an alert. A reader is
    ``<institution>/<person>`` as their token names them: a person id alone could be any
    institution's."""

    readers: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}/[^\s]{1,128}$")]] = Field(
        min_length=1, max_length=50
    )
    reason: Text
    at: AwareDatetime


class UnsealPayload(_PatientItem):
    reason: Text
    at: AwareDatetime
