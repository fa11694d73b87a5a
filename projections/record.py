"""What each ledger event does to the shared patient record, as rows of a batch.

Two dispatch tables: ``EVENT_HANDLERS`` from a ledger event's class to its handler, and
``ITEM_HANDLERS`` from an accepted item's kind to its handler, so adding a kind is one line
and applying an event costs one dict lookup. A stored envelope is upcast to today's shape
and read without a second validation (``EnvelopeSchema``, domain/upcasting.py,
projections/stored.py). Nothing here
talks to PostgreSQL: the rows go into a ``Changes`` that the runner writes in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from domain.categories import categories_of
from domain.clinical import ENTRY_KINDS, REFERRAL_KINDS
from domain.consent_items import needs_patient
from domain.identity import (
    DEMOGRAPHICS_CONTEXT,
    IDENTIFIER_CONTEXT,
    RESIDENT_ID_SYSTEM,
    PatientIdentity,
)
from domain.institution import Institution
from domain.resident_id import discrepancies
from domain.submission import (
    CURRENT_SCHEMA,
    EnvelopeSchema,
    Submission,
    ValidItem,
    validate_envelope,
)
from projections import merge_requests, referrals
from projections.batch import Changes
from projections.fields import FieldCipher
from projections.masks import CATEGORY_SYSTEM, mask_of
from projections.render import dumps, entry_id, render
from projections.stored import StoredItem, StoredReader

LookupName = Callable[[str], Awaitable[str | None]]


class RecordApplier:
    """Turns ledger events into a batch's rows; keeps institution names it has met."""

    def __init__(
        self, lookup_name: LookupName, fields: FieldCipher, schema: EnvelopeSchema = CURRENT_SCHEMA
    ) -> None:
        self.lookup_name = lookup_name
        self.fields = fields  # direct identifiers: sealed, or kept as keyed hashes
        self.schema = schema
        self.stored = StoredReader(schema)
        self.names: dict[str, str] = {}  # institution code -> name

    async def apply(self, changes: Changes, position: int, event: Any) -> None:
        changes.clock.append((position, event.timestamp))
        handler = EVENT_HANDLERS.get(type(event))
        if handler is not None:  # key rotations and the like change no row
            await handler(self, changes, position, event)

    async def institution_name(self, code: str) -> str:
        if code not in self.names:
            self.names[code] = await self.lookup_name(code) or code
        return self.names[code]


EventHandler = Callable[[RecordApplier, Changes, int, Any], Awaitable[None]]

_INSERT_IDENTIFIER = (
    "INSERT INTO patient_identifiers (system, value_hash, value_sealed, patient_id, "
    "institution, position) VALUES ($1, $2, $3, $4, $5, $6)"
)


def _identifier(a: RecordApplier, system: str, value: str) -> tuple[str, bytes, str]:
    return system, a.fields.lookup(system, value), a.fields.seal(value, IDENTIFIER_CONTEXT)


def guardian_key(fields: FieldCipher, resident_id: str) -> str:
    """A guardian's resident ID as the read models keep it: compared, never shown."""
    return fields.lookup(RESIDENT_ID_SYSTEM, resident_id).hex()


async def _institution_registered(
    a: RecordApplier, changes: Changes, position: int, event: Any
) -> None:
    changes.first(
        "INSERT INTO institutions (code, name, level, position) VALUES ($1, $2, $3, $4)",
        event.code,
        event.name,
        event.level,
        position,
    )
    a.names[event.code] = event.name


async def _patient_registered(
    a: RecordApplier, changes: Changes, position: int, event: Any
) -> None:
    changes.first(
        "INSERT INTO patients (patient_id, birth_date, sex, temporary, position) "
        "VALUES ($1, $2::text::date, $3, $4, $5)",
        event.originator_id,
        event.birth_date,
        event.sex,
        event.resident_id is None,
        position,
    )
    if event.resident_id is not None:
        changes.first(
            _INSERT_IDENTIFIER,
            *_identifier(a, RESIDENT_ID_SYSTEM, event.resident_id),
            event.originator_id,
            None,
            position,
        )


async def _identifier_linked(a: RecordApplier, changes: Changes, position: int, event: Any) -> None:
    changes.first(
        _INSERT_IDENTIFIER,
        *_identifier(a, event.system, event.value),
        event.originator_id,
        event.institution,
        position,
    )


async def _merged(a: RecordApplier, changes: Changes, position: int, event: Any) -> None:
    changes.op(
        "UPDATE patients SET merged_into = $2 WHERE patient_id = $1",
        event.originator_id,
        event.target,
    )
    changes.op(
        "INSERT INTO identity_merges (source, target, valid_from) VALUES ($1, $2, $3)",
        event.originator_id,
        event.target,
        position,
    )


async def _unmerged(a: RecordApplier, changes: Changes, position: int, event: Any) -> None:
    changes.op("UPDATE patients SET merged_into = NULL WHERE patient_id = $1", event.originator_id)
    changes.op(
        "UPDATE identity_merges SET valid_to = $2 WHERE source = $1 AND valid_to IS NULL",
        event.originator_id,
        position,
    )


@dataclass(frozen=True, slots=True)
class ApplyingSubmission:
    """One accepted submission being applied: what every item handler needs besides itself."""

    changes: Changes
    position: int
    institution: str
    institution_name: str
    submission_id: str
    at: Any  # the ledger event's timestamp
    fields: FieldCipher


async def _submission(a: RecordApplier, changes: Changes, position: int, event: Any) -> None:
    valid, problems = _read_envelope(event.envelope, a.stored)
    if valid is None:  # accepted once, so this is a code change that broke replay
        raise RuntimeError(
            f"ledger event at position {position} no longer validates: {[p.code for p in problems]}"
        )
    name = await a.institution_name(valid.institution)
    accepted = ApplyingSubmission(
        changes, position, valid.institution, name, valid.submission_id, event.timestamp, a.fields
    )
    changes.intake.accepted(valid.institution, event.timestamp, [i.kind for i in valid.items])
    uuids = {p: UUID(p) for p in set(event.patient_ids)}  # a patient's items share one
    for item, patient_id in zip(valid.items, event.patient_ids, strict=True):
        ITEM_HANDLERS[item.kind](accepted, item, uuids[patient_id])


def _read_envelope(text: str, stored: StoredReader) -> Any:
    """The gateway validated it before the ledger took it: read it as validation would
    (projections/stored.py), or validate it again when the reader cannot be sure."""
    doc = _loads(text)
    fast = stored.read(doc)
    if fast is not None:
        return fast, []
    return validate_envelope(doc, schema=stored.schema)


def _loads(text: str) -> Any:
    """An accepted envelope's JSON: orjson reads every one the same as the gateway's parser
    did (no integer past 2**53 is ever signed), but for a lone surrogate, which it refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _referral(apply: Callable[[Changes, int, Any], None]) -> EventHandler:
    async def handle(a: RecordApplier, changes: Changes, position: int, event: Any) -> None:
        apply(changes, position, event)

    return handle


# Event classes the library made from ``@event("Name")`` are invisible to mypy, hence the ignores.
EVENT_HANDLERS: dict[type, EventHandler] = {
    Institution.Registered: _institution_registered,  # type: ignore[attr-defined]
    PatientIdentity.Registered: _patient_registered,  # type: ignore[attr-defined]
    PatientIdentity.IdentifierLinked: _identifier_linked,  # type: ignore[attr-defined]
    PatientIdentity.Merged: _merged,  # type: ignore[attr-defined]
    PatientIdentity.Unmerged: _unmerged,  # type: ignore[attr-defined]
    Submission.Accepted: _submission,
    **{cls: _referral(apply) for cls, apply in referrals.HANDLERS.items()},
    **{cls: _referral(apply) for cls, apply in merge_requests.HANDLERS.items()},
}

# Items --------------------------------------------------------------------------------------

ItemHandler = Callable[[ApplyingSubmission, ValidItem | StoredItem, UUID], None]


def _patient(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    """The demographics as the institution sent them, sealed, and with them their data-quality
    flags: where they contradict the item's resident ID (kept in plain, names no value)."""
    payload: Any = item.payload
    flags = discrepancies(
        payload.patient.resident_id, gender=payload.gender, birth_date=payload.birth_date
    )
    s.changes.op(
        "UPDATE patients SET demographics = $2, quality_flags = $3 WHERE patient_id = $1",
        pid,
        s.fields.seal(payload.model_dump_json(exclude={"patient"}), DEMOGRAPHICS_CONTEXT),
        [d.code for d in flags] or None,
    )


def _retract(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    payload: Any = item.payload
    record = payload.record
    s.changes.end(
        entry_id(s.institution, record), s.institution, record, s.position, "retracted", plain=False
    )


def _consent(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    payload: Any = item.payload
    rid = entry_id(s.institution, item.source_id)
    resource = dumps(
        render(
            item.kind,
            payload,
            resource_id=rid,
            patient_id=pid,
            institution=s.institution,
            institution_name=s.institution_name,
        )
    )
    document = payload.signed_document
    counts = document is not None or not needs_patient(
        s.institution, tuple(payload.scope), tuple(payload.purposes), payload.categories
    )
    s.changes.op(
        "INSERT INTO consents (consent_id, patient_id, institution, consent_type, "
        "scope, purposes, valid_from, valid_to, signed_by, resource, position, "
        "categories, guardian, source_id, document_sha256, signing_method, "
        "confirmed_position) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
        # In full at once: a consent that opens nothing beyond its institution's own care,
        # one with its signed form, or one the patient gave in the portal.
        "CASE WHEN $17::boolean OR EXISTS (SELECT 1 FROM institutions WHERE code = $3 "
        "AND level = 'patient_portal') THEN $11::bigint END)",
        rid,
        pid,
        s.institution,
        payload.consent_type,
        list(payload.scope),
        list(payload.purposes),
        payload.valid_from,
        payload.valid_to,
        payload.signed_by,
        resource,
        s.position,
        list(payload.categories) if payload.categories else None,
        guardian_key(s.fields, payload.guardian.resident_id)
        if payload.guardian and payload.guardian.resident_id
        else None,
        item.source_id,
        document.sha256 if document else None,
        document.method if document else None,
        counts,
    )


def _named_consent(item: ValidItem | StoredItem) -> UUID:
    """The consent a withdrawal or a confirmation names (``<institution>/<source_id>``)."""
    owner, _, sid = item.payload.consent.partition("/")  # type: ignore[union-attr]
    return entry_id(owner, sid)


def _consent_confirmation(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    s.changes.op(
        "UPDATE consents SET confirmed_position = $2 "
        "WHERE consent_id = $1 AND confirmed_position IS NULL",
        _named_consent(item),
        s.position,
    )


def _entry(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    eid = entry_id(s.institution, item.record)
    categories = categories_of(item.kind, item.payload)
    fhir = render(
        item.kind,
        item.payload,
        resource_id=eid,
        patient_id=pid,
        institution=s.institution,
        institution_name=s.institution_name,
    )
    fhir["meta"]["versionId"] = str(s.position)
    fhir["meta"]["security"] = [{"system": CATEGORY_SYSTEM, "code": c} for c in categories]
    why = "amended" if item.amends else "superseded"
    named = item.record != item.source_id
    if named and not item.amends:
        s.changes.named.add((s.institution, item.record))
    plain = not named and not item.amends
    s.changes.end(eid, s.institution, item.record, s.position, why, plain=plain)
    s.changes.entries[eid] = [
        eid,
        pid,
        s.institution,
        item.record,
        item.source_id,
        item.kind,
        s.submission_id,
        dumps(fhir),
        s.position,
        None,
        None,
        mask_of(categories),
        s.at,
    ]


def _consent_withdrawal(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    s.changes.op(
        "UPDATE consents SET withdrawn_position = $2, withdrawn_at = $3 "
        "WHERE consent_id = $1 AND withdrawn_position IS NULL",
        _named_consent(item),
        s.position,
        s.at,
    )


def _guardian(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    payload: Any = item.payload
    s.changes.op(
        "INSERT INTO guardians (patient_id, guardian, relationship, "
        "institution, valid_from, valid_to, position) VALUES "
        "($1, $2, $3, $4, $5, $6, $7)",
        pid,
        guardian_key(s.fields, payload.guardian.resident_id),
        payload.relationship,
        s.institution,
        payload.valid_from,
        payload.valid_to,
        s.position,
    )


def _care_contract(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    payload: Any = item.payload
    s.changes.op(
        "INSERT INTO care_contracts (patient_id, institution, doctor, "
        "valid_from, valid_to, position) VALUES ($1, $2, $3, $4, $5, $6)",
        pid,
        s.institution,
        payload.doctor,
        payload.valid_from,
        payload.valid_to,
        s.position,
    )


def _seal(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    payload: Any = item.payload
    s.changes.op(
        "INSERT INTO seals (patient_id, institution, readers, reason, "
        "sealed_at, position) VALUES ($1, $2, $3, $4, $5, $6)",
        pid,
        s.institution,
        list(payload.readers),
        payload.reason,
        s.at,
        s.position,
    )


# An institution lifts its own seals only; the regulator's desk lifts every seal of the
# person (any identity merged with the one it names).
_UNSEAL = """UPDATE seals SET unsealed_position = $2, unsealed_at = $3
WHERE unsealed_position IS NULL AND (
  (patient_id = $1 AND institution = $4)
  OR (EXISTS (SELECT 1 FROM institutions WHERE code = $4 AND level = 'regulator')
      AND patient_id IN (
        WITH RECURSIVE up(id, depth) AS (
          SELECT $1::uuid, 0
          UNION ALL SELECT p.merged_into, up.depth + 1 FROM patients p JOIN up ON p.patient_id = up.id
          WHERE p.merged_into IS NOT NULL AND up.depth < 64),
        m(id) AS (SELECT id FROM (SELECT id FROM up ORDER BY depth DESC LIMIT 1) r
                  UNION SELECT p.patient_id FROM patients p JOIN m ON p.merged_into = m.id)
        SELECT id FROM m)))"""


def _unseal(s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID) -> None:
    s.changes.op(_UNSEAL, pid, s.position, s.at, s.institution)


def _carried_by_their_own_events(
    s: ApplyingSubmission, item: ValidItem | StoredItem, pid: UUID
) -> None:
    """Merges, unmerges and referrals: their aggregates' ledger events carry the change."""


ITEM_HANDLERS: dict[str, ItemHandler] = {
    **dict.fromkeys(ENTRY_KINDS, _entry),
    "patient": _patient,
    "consent": _consent,
    "retract": _retract,
    "consent_withdrawal": _consent_withdrawal,
    "consent_confirmation": _consent_confirmation,
    "guardian": _guardian,
    "care_contract": _care_contract,
    "seal": _seal,
    "unseal": _unseal,
    "merge": _carried_by_their_own_events,
    "unmerge": _carried_by_their_own_events,
    **dict.fromkeys(REFERRAL_KINDS, _carried_by_their_own_events),
}
