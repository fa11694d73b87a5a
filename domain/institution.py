"""Institutions of the consortium: the county hospital, township health centres, village clinics.

Registering an institution and rotating its key are admin actions recorded in the ledger; the
gateway trusts a submission only when it is signed with the key registered for its sender.
"""

from __future__ import annotations

import re
from enum import Enum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError

CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NS = uuid5(NAMESPACE_URL, "urn:county-hie:institution")


class Level(str, Enum):
    COUNTY_HOSPITAL = "county_hospital"
    TOWNSHIP_HEALTH_CENTRE = "township_health_centre"
    VILLAGE_CLINIC = "village_clinic"
    # The exchange's own patient portal: it records what patients give over HTTP (consents).
    PATIENT_PORTAL = "patient_portal"
    # The exchange's own identity steward desk: it records the steward's decisions on merges.
    MPI_STEWARD = "mpi_steward"
    # The regulator's desk: it records what the regulator does to a record (lifting a seal).
    REGULATOR = "regulator"


# The member institutions, which treat patients and send every day; the other levels are the
# exchange's own desks, which send only when a person acts there.
CARE_LEVELS = (
    Level.COUNTY_HOSPITAL.value,
    Level.TOWNSHIP_HEALTH_CENTRE.value,
    Level.VILLAGE_CLINIC.value,
)


class InvalidInstitution(DomainError):
    code = "institution.invalid"


def check_code(code: str) -> str:
    if not CODE_PATTERN.match(code):
        raise InvalidInstitution(
            "an institution code is 1-32 letters, digits, '_' or '-' (it is a NATS subject token)"
        )
    return code


class Institution(Aggregate):
    """A member institution and its registered Ed25519 public key (raw, base64)."""

    @staticmethod
    def create_id(code: str) -> UUID:
        return uuid5(_NS, code)

    @event("Registered")
    def __init__(self, code: str, name: str, level: str, public_key: str) -> None:
        check_code(code)
        Level(level)
        if not name.strip():
            raise InvalidInstitution("an institution needs a name")
        self.code = code
        self.name = name
        self.level = level
        self.public_key = public_key

    @event("KeyRotated")
    def rotate_key(self, public_key: str) -> None:
        self.public_key = public_key
