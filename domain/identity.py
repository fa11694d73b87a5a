"""Regional patient identity (the MPI's aggregate).

A patient's regional id is derived from the resident ID with a keyed hash (HMAC-SHA256 with
the consortium's pseudonymisation key), so the raw ID number is never an aggregate id, a URL
or a foreign key: it lives only inside the (encrypted) ledger events and the identifiers view.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.resident_id import ResidentId

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号 (China NHC identifier OID)


def mrn_system(institution: str) -> str:
    """The identifier system of one institution's own medical record numbers."""
    return f"urn:county-hie:mrn:{institution}"


def patient_id_for(resident_id: ResidentId, key: bytes) -> UUID:
    """The regional patient id for a resident ID: stable, not reversible without the key."""
    digest = hmac.new(key, b"resident-id:" + resident_id.value.encode(), hashlib.sha256).digest()
    return UUID(bytes=digest[:16], version=4)


class PatientIdentity(Aggregate):
    """One resident across every institution: resident ID plus the identifiers linked to it."""

    @event("Registered")
    def __init__(self, id: UUID, resident_id: str, birth_date: str, sex: str) -> None:  # noqa: A002
        # ``id`` is patient_id_for(resident_id, key): the library takes it as the aggregate id.
        self.resident_id = resident_id
        self.birth_date = birth_date
        self.sex = sex
        self.identifiers: list[tuple[str, str]] = []

    def has_identifier(self, system: str, value: str) -> bool:
        return (system, value) in self.identifiers

    @event("IdentifierLinked")
    def link_identifier(self, system: str, value: str, institution: str) -> None:
        self.identifiers.append((system, value))
