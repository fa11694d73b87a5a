"""The domain's errors.

    DomainError                 base; every error has a stable ``code``
    ├── InvalidResidentId       a GB 11643 resident ID that fails its checks
    ├── InvalidEnvelope         a submission envelope that cannot be accepted
    └── UnknownInstitution      a code that no registered institution has

Messages never carry patient data (names, ID numbers, clinical values): they name the field
and the rule that failed.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "domain"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidResidentId(DomainError):
    code = "resident_id.invalid"


class InvalidEnvelope(DomainError):
    code = "envelope.invalid"


class UnknownInstitution(DomainError):
    code = "institution.unknown"
