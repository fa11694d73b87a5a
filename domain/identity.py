"""Regional patient identity (the MPI's aggregate): identifiers, temporary identities, merges.

A resident's regional id is derived from the resident ID with a keyed hash (HMAC-SHA256 with
the consortium's pseudonymisation key), so the raw ID number is never an aggregate id, a URL
or a foreign key: it lives only inside the (encrypted) ledger events and the identifiers view.

A patient the exchange first meets without a resident ID (a newborn, a foreigner) gets a
*temporary* identity, derived the same way from the identifier it came with (an institution's
MRN or a health card). When an item later names that identifier together with a resident ID,
or an ADT^A40 merges them, the temporary identity is merged into the resident's. A merge moves
nothing: each identity keeps its identifiers and its entries, and readers follow
``merged_into`` to the surviving identity, so an unmerge gives back exactly what was there.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.resident_id import ResidentId

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号 (China NHC identifier OID)
HEALTH_CARD_SYSTEM = "urn:county-hie:health-card"  # 居民健康卡
# The read models seal these fields for their column (projections/fields.py): an identifier's
# value, and a patient's demographics as the institutions sent them.
IDENTIFIER_CONTEXT = "patient_identifiers.value"
DEMOGRAPHICS_CONTEXT = "patients.demographics"


def mrn_system(institution: str) -> str:
    """The identifier system of one institution's own medical record numbers."""
    return f"urn:county-hie:mrn:{institution}"


@lru_cache(maxsize=65_536)  # a patient's items repeat the same number many times
def _keyed(key: bytes, text: str) -> UUID:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return UUID(bytes=digest[:16], version=4)


def patient_id_for(resident_id: ResidentId, key: bytes) -> UUID:
    """The regional patient id for a resident ID: stable, not reversible without the key."""
    return _keyed(key, "resident-id:" + resident_id.value)


def temporary_id_for(system: str, value: str, key: bytes) -> UUID:
    """The id of the temporary identity first met under (system, value)."""
    return _keyed(key, f"temporary:{system}|{value}")


class PatientIdentity(Aggregate):
    """One person across every institution: their identifiers, and where they were merged."""

    @event("Registered")
    def __init__(
        self,
        id: UUID,
        resident_id: str | None,
        birth_date: str | None,
        sex: str | None,
    ) -> None:
        # A temporary identity has no resident ID (and so no birth date or sex from it).
        self.resident_id = resident_id
        self.birth_date = birth_date
        self.sex = sex
        self.identifiers: list[tuple[str, str]] = []
        self.merged_into: UUID | None = None
        self.merged_by: str | None = None  # the institution whose item merged it
        self.absorbed: list[UUID] = []
        # Who linked the first identifier: for a temporary identity, the institution that
        # registered it (its identifier came with the item that made it).
        self.registered_by: str | None = None

    @property
    def temporary(self) -> bool:
        return self.resident_id is None

    def has_identifier(self, system: str, value: str) -> bool:
        return (system, value) in self.identifiers

    @event("IdentifierLinked")
    def link_identifier(self, system: str, value: str, institution: str) -> None:
        if not self.identifiers:
            self.registered_by = institution
        self.identifiers.append((system, value))

    @event("Merged")
    def merge_into(self, target: UUID, institution: str, source_id: str) -> None:
        """This identity was the same person as ``target``, which survives."""
        if self.merged_into is not None:
            raise ValueError("an identity that is merged away cannot be merged again")
        if target == self.id:
            raise ValueError("an identity cannot be merged into itself")
        self.merged_into = target
        self.merged_by = institution

    @event("Absorbed")
    def absorb(self, source: UUID, institution: str, source_id: str) -> None:
        self.absorbed.append(source)

    @event("Unmerged")
    def unmerge(self, institution: str, source_id: str) -> None:
        if self.merged_into is None:
            raise ValueError("only a merged identity can be unmerged")
        self.merged_into = None
        self.merged_by = None

    @event("Released")
    def release(self, source: UUID, institution: str, source_id: str) -> None:
        self.absorbed.remove(source)
