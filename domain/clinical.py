"""Canonical clinical events: what one item of a submission envelope may say.

These plain pydantic models are what the gateway validates on the hot path (FHIR parsing
happens in the adapters, on the sender's side). Each item names its patient by resident ID;
payloads keep codes with their system (and version where the sender gives one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from domain.categories import CATEGORIES
from domain.consent_items import (
    CareContractPayload,
    ConsentConfirmationPayload,
    ConsentWithdrawalPayload,
    GuardianPayload,
    SealPayload,
    SignedDocument,
    UnsealPayload,
)
from domain.referral_items import ReferralActionPayload, ReferralPayload
from domain.times import ClinicalTime
from domain.values import (  # noqa: F401  (re-exported: the item models build on them)
    PURPOSES,
    Coding,
    InstitutionCode,
    PatientRef,
    Quantity,
    ReferenceRange,
    ShortText,
    Text,
    _checked_resident_id,
    _Model,
    _PatientItem,
)

# Clinical entries: each becomes one entry of the shared record (versioned by its record id).
ENTRY_KINDS = (
    "encounter",
    "condition",
    "observation",
    "medication_request",
    "medication_dispense",
    "procedure",
    "immunization",
    "allergy",
    "document",
)
# Identity and correction events: they change how entries are read, not the entries' content.
CONTROL_KINDS = (
    "patient",
    "consent",
    "retract",
    "merge",
    "unmerge",
    "consent_withdrawal",
    "consent_confirmation",
    "guardian",
    "care_contract",
    "seal",
    "unseal",
)
# Referrals (双向转诊): a request, then the actions that move it along (domain/referral.py).
REFERRAL_KINDS = ("referral", "referral_action")
KINDS = (*ENTRY_KINDS, *CONTROL_KINDS, *REFERRAL_KINDS)
Kind = Literal[
    "encounter",
    "condition",
    "observation",
    "medication_request",
    "medication_dispense",
    "procedure",
    "immunization",
    "allergy",
    "document",
    "patient",
    "consent",
    "retract",
    "merge",
    "unmerge",
    "referral",
    "referral_action",
    "consent_withdrawal",
    "consent_confirmation",
    "guardian",
    "care_contract",
    "seal",
    "unseal",
]


class PatientPayload(_PatientItem):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    gender: Literal["male", "female", "other", "unknown"]
    birth_date: date | None = None


# The R4 binding of Encounter.class (v3 ActEncounterCode), as the exchange names its classes.
ENCOUNTER_CLASSES = (
    "outpatient",  # AMB
    "inpatient",  # IMP, ACUTE, NONAC
    "emergency",  # EMER
    "home-health",  # HH: a village doctor's home visit
    "field",  # FLD
    "observation",  # OBSENC
    "pre-admission",  # PRENC
    "short-stay",  # SS
    "virtual",  # VR: a remote consultation
)


class EncounterPayload(_PatientItem):
    """A visit. An admission (HL7 A01) is an inpatient encounter in progress; its discharge
    (A03) is a new version of the same record, finished, with ``end`` and a disposition. A
    planned or cancelled visit may have no ``start`` yet; times keep their precision."""

    encounter_class: Literal[ENCOUNTER_CLASSES]  # type: ignore[valid-type]
    status: Literal["planned", "arrived", "in-progress", "finished", "cancelled", "unknown"]
    start: ClinicalTime | None = None
    end: ClinicalTime | None = None
    department: Text | None = None
    reason: list[Coding] = Field(default_factory=list, max_length=20)
    admit_source: Text | None = None
    discharge_disposition: Text | None = None
    attending: Text | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> EncounterPayload:
        if self.end is not None and self.start is not None and self.end.before(self.start):
            raise PydanticCustomError("encounter.end_before_start", "end is before start")
        if self.start is None and self.status in ("in-progress", "finished"):
            raise PydanticCustomError(
                "encounter.start_missing", "a visit in progress or finished says when it started"
            )
        return self


class ConditionPayload(_PatientItem):
    code: Coding
    clinical_status: Literal[
        "active", "recurrence", "relapse", "inactive", "remission", "resolved"
    ] = "active"
    verification_status: Literal[
        "unconfirmed", "provisional", "differential", "confirmed", "refuted"
    ] = "confirmed"
    onset: ClinicalTime | None = None
    recorded: ClinicalTime | None = None
    encounter: ShortText | None = Field(default=None, description="source_id of the encounter")


class ObservationPayload(_PatientItem):
    code: Coding
    status: Literal["registered", "preliminary", "final", "amended", "corrected"]
    category: (
        Literal[
            "vital-signs", "laboratory", "survey", "exam", "social-history", "imaging", "procedure"
        ]
        | None
    )
    # FHIR effective[x]: a time (dateTime, instant) or a period (``effective`` to
    # ``effective_end``); ``issued`` is when the result was released. One of them at least.
    effective: ClinicalTime | None = None
    effective_end: ClinicalTime | None = None
    issued: AwareDatetime | None = None
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
                "observation.values",
                "give at most one of value_quantity, value_string, value_coding",
            )
        if self.effective is None and self.issued is None:
            raise PydanticCustomError(
                "observation.no_time", "say when: effective (a time or a period) or issued"
            )
        if self.effective_end is not None and (
            self.effective is None or self.effective_end.before(self.effective)
        ):
            raise PydanticCustomError(
                "observation.period", "effective_end needs an effective start before it"
            )
        return self


class ConsentPayload(_PatientItem):
    """A consent the patient (or guardian) signed at the recording institution.

    ``categories`` are the data categories it lets the named institutions see (absent: every
    general category); a sensitive category (HIV, psychiatric, reproductive, genetic) is
    shared only if named here. A consent ``signed_by`` a guardian names the guardian, who must
    be recorded as such (a ``guardian`` item) when the consent is relied on.
    """

    consent_type: Literal["separate", "general"]
    scope: list[InstitutionCode | Literal["*"]] = Field(min_length=1, max_length=100)
    purposes: list[Literal[PURPOSES]] = Field(min_length=1)  # type: ignore[valid-type]
    categories: list[Literal[CATEGORIES]] | None = Field(default=None, min_length=1)  # type: ignore[valid-type]
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None
    notice_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signed_by: Literal["patient", "guardian"] = "patient"
    guardian: PatientRef | None = None
    # The signed consent form: a consent that reaches beyond the recording institution counts
    # with it at once; without it, once the patient confirms it in the portal.
    signed_document: SignedDocument | None = None

    @model_validator(mode="after")
    def _period(self) -> ConsentPayload:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise PydanticCustomError("consent.period", "valid_to must be after valid_from")
        if self.signed_by == "guardian" and (
            self.guardian is None or self.guardian.resident_id is None
        ):
            raise PydanticCustomError(
                "consent.guardian",
                "a consent signed by a guardian names the guardian by resident_id",
            )
        if self.signed_by == "patient" and self.guardian is not None:
            raise PydanticCustomError(
                "consent.guardian", "a guardian is named only on a consent signed_by guardian"
            )
        return self


class MedicationRequestPayload(_PatientItem):
    medication: Coding
    status: Literal["active", "on-hold", "cancelled", "completed", "stopped", "draft"]
    intent: Literal["proposal", "plan", "order", "original-order", "instance-order"] = "order"
    authored: ClinicalTime
    dosage_text: Text | None = None
    dose: Quantity | None = None
    route: Coding | None = None
    frequency: ShortText | None = None
    quantity: Quantity | None = None
    duration_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    requester: Text | None = None
    encounter: ShortText | None = None


class MedicationDispensePayload(_PatientItem):
    medication: Coding
    status: Literal["preparation", "in-progress", "on-hold", "completed", "declined", "stopped"]
    handed_over: ClinicalTime | None = None
    quantity: Quantity | None = None
    days_supply: Annotated[int, Field(ge=0, le=3650)] | None = None
    dosage_text: Text | None = None
    prescription: ShortText | None = Field(default=None, description="record of the request")


class ProcedurePayload(_PatientItem):
    code: Coding
    status: Literal["preparation", "in-progress", "not-done", "on-hold", "stopped", "completed"]
    performed: ClinicalTime | None = None
    body_site: Coding | None = None
    performer: Text | None = None
    encounter: ShortText | None = None


class ImmunizationPayload(_PatientItem):
    vaccine: Coding
    status: Literal["completed", "not-done"]
    occurrence: ClinicalTime
    lot_number: ShortText | None = None
    dose_number: Annotated[int, Field(ge=1, le=50)] | None = None
    site: Coding | None = None
    route: Coding | None = None
    manufacturer: Text | None = None


class AllergyPayload(_PatientItem):
    substance: Coding
    clinical_status: Literal["active", "inactive", "resolved"] = "active"
    verification_status: Literal["unconfirmed", "confirmed", "refuted"] = "confirmed"
    category: Literal["food", "medication", "environment", "biologic"] | None = None
    criticality: Literal["low", "high", "unable-to-assess"] | None = None
    reactions: list[Coding] = Field(default_factory=list, max_length=20)
    recorded: ClinicalTime | None = None


class DocumentPayload(_PatientItem):
    """A clinical document (a discharge summary, a report) with the hash of its content.

    ``data`` (base64) is optional: a large document may stay at the sender, named by its hash.
    When it is sent, the hash must be that of the decoded bytes.
    """

    type: Coding
    title: Text
    created: ClinicalTime
    content_type: Annotated[str, Field(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=100)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]
    data: Annotated[str, Field(max_length=700_000)] | None = None
    author: Text | None = None
    encounter: ShortText | None = None

    @model_validator(mode="after")
    def _hash_matches(self) -> DocumentPayload:
        if self.data is None:
            return self
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (ValueError, binascii.Error):
            raise PydanticCustomError("document.data_not_base64", "data must be base64") from None
        if hashlib.sha256(raw).hexdigest() != self.sha256 or len(raw) != self.size:
            raise PydanticCustomError(
                "document.hash_mismatch", "sha256 and size must be those of the decoded data"
            )
        return self


class RetractPayload(_PatientItem):
    """Entered in error: the record (one this institution sent) is no longer part of the
    shared record. History keeps it for auditors."""

    record: Annotated[str, Field(pattern=r"^[^\s]{1,200}$")]
    reason: Text


class MergePayload(_PatientItem):
    """HL7 ADT^A40: ``merged`` (MRG) was the same person as ``patient`` (PID), who survives.

    The identity steward's desk decides a pending merge with ``request`` (the requesting
    item, ``<institution>/<source_id>``), ``decision``, the ``steward`` who decided and a
    ``reason``; ``patient`` is then the request's survivor and ``merged`` is left out (the
    request names it).
    """

    merged: PatientRef | None = None
    request: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}/[^\s]{1,200}$")] | None = None
    decision: Literal["approve", "reject"] | None = None
    steward: ShortText | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _merged_or_request(self) -> MergePayload:
        if self.request is None:
            if self.merged is None:
                raise PydanticCustomError("merge.merged_missing", "name the merged patient")
            if self.decision or self.steward or self.reason:
                raise PydanticCustomError(
                    "merge.decision_without_request",
                    "decision, steward and reason decide a pending merge: name its request",
                )
        elif self.merged is not None or not (self.decision and self.steward and self.reason):
            raise PydanticCustomError(
                "merge.decision_incomplete",
                "a decision on a merge request gives decision, steward and reason, and no "
                "merged patient (the request names it)",
            )
        return self


class UnmergePayload(_PatientItem):
    """Undo a merge: ``unmerged`` is again a person of their own.

    The identity steward's desk undoes a merge it approved by naming the ``request`` (with the
    ``steward`` and a ``reason``) instead of the unmerged patient.
    """

    unmerged: PatientRef | None = None
    request: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}/[^\s]{1,200}$")] | None = None
    steward: ShortText | None = None
    reason: Text | None = None

    @model_validator(mode="after")
    def _unmerged_or_request(self) -> UnmergePayload:
        if self.request is None:
            if self.unmerged is None:
                raise PydanticCustomError("unmerge.unmerged_missing", "name the patient to unmerge")
            if self.steward or self.reason:
                raise PydanticCustomError(
                    "unmerge.steward_without_request",
                    "steward and reason undo an approved merge request: name its request",
                )
        elif self.unmerged is not None or not (self.steward and self.reason):
            raise PydanticCustomError(
                "unmerge.request_incomplete",
                "undoing an approved merge request gives the request, the steward and the "
                "reason, and no unmerged patient (the request names it)",
            )
        return self


PAYLOAD_MODELS: dict[str, type[_PatientItem]] = {
    "patient": PatientPayload,
    "encounter": EncounterPayload,
    "condition": ConditionPayload,
    "observation": ObservationPayload,
    "consent": ConsentPayload,
    "medication_request": MedicationRequestPayload,
    "medication_dispense": MedicationDispensePayload,
    "procedure": ProcedurePayload,
    "immunization": ImmunizationPayload,
    "allergy": AllergyPayload,
    "document": DocumentPayload,
    "retract": RetractPayload,
    "merge": MergePayload,
    "unmerge": UnmergePayload,
    "referral": ReferralPayload,
    "referral_action": ReferralActionPayload,
    "consent_withdrawal": ConsentWithdrawalPayload,
    "consent_confirmation": ConsentConfirmationPayload,
    "guardian": GuardianPayload,
    "care_contract": CareContractPayload,
    "seal": SealPayload,
    "unseal": UnsealPayload,
}

RecordId = Annotated[str, Field(pattern=r"^[^\s]{1,200}$")]


class Item(_Model):
    """One canonical clinical event as it stands in an envelope.

    ``source_id`` names this event in the sending system (unique per institution, for good:
    the ledger refuses it twice). ``record`` names the clinical record the event is a version
    of (an admission and its discharge share the visit's record); it defaults to
    ``source_id``. ``amends`` makes the event a correction of a record the institution sent
    before: the ledger refuses it when it holds no such record. ``schema_version`` is the
    shape of its kind's payload the item follows (absent: 1); older shapes are upcast before
    this model sees them (domain/upcasting.py).
    """

    source_id: RecordId
    kind: Kind
    payload: dict[str, Any]
    record: RecordId | None = None
    amends: RecordId | None = None
    schema_version: Annotated[int, Field(ge=1, strict=True)] = 1

    @property
    def record_id(self) -> str:
        return self.amends or self.record or self.source_id

    @model_validator(mode="after")
    def _one_record(self) -> Item:
        if self.record and self.amends and self.record != self.amends:
            raise PydanticCustomError(
                "item.record_amends", "record and amends, when both given, must be the same"
            )
        if (self.record or self.amends) and self.kind not in ENTRY_KINDS:
            raise PydanticCustomError(
                "item.record_kind", "record and amends apply to clinical entries only"
            )
        return self


def parse_payload(kind: str, payload: dict[str, Any]) -> _PatientItem:
    """Validate a payload for its kind (raises pydantic.ValidationError)."""
    return PAYLOAD_MODELS[kind].model_validate(payload)
