"""The project's one error tree. Every error the exchange raises on purpose derives from
``HieError``: it carries a stable machine ``code`` (dotted, e.g. ``token.expired``) and a
message that tells the user what to do. Each package has one base under it:

    HieError                        the coded base class; ``code`` and ``message``
    ├── DomainError                 domain/: a rule of the domain refused something
    │   ├── InvalidResidentId       a GB 11643 resident ID that fails its checks
    │   ├── InvalidEnvelope         a submission envelope that cannot be accepted
    │   ├── UnknownInstitution      a code that no registered institution has
    │   ├── InvalidInstitution      an institution that cannot be registered (domain.institution)
    │   ├── TransitionRefused       a referral step its state or party does not allow
    │   └── SubmissionRefused       a submission the ledger's checks refuse; carries its problems
    │                               (domain.services.refusal)
    ├── ConsentError                consent/
    │   └── InvalidBreakGlass       a break-glass request without a valid reason
    ├── AuditError                  audit/
    │   ├── AuditWriteError         the audit log could not record (no data may leave)
    │   ├── AuditIntegrityError     the stored tree does not extend the last signed head
    │   ├── SearchError             an AuditEvent search that cannot be run
    │   └── CheckpointError         a signed tree head that does not verify
    ├── AdapterError                adapters/
    │   ├── MappingError            a CSV mapping file that is wrong (lists each problem)
    │   └── SubmitError             a submission the exchange did not take
    └── ExchangeError               exchange/ (exchange.errors)
        ├── ConfigurationError      settings that cannot work; the message says which and how
        ├── EmbeddedServerError     an embedded PostgreSQL or NATS server did not start
        ├── NotRunning              a CLI command needs a running exchange and found none
        ├── SchemaVersionError      a database newer than the code, or a changed migration step
        ├── BackupError             a backup that cannot be taken, or restored here
        ├── TokenError              a bearer token refused (exchange.auth.tokens)
        │   └── RevocationUnavailable  the revocation list is stale: fail closed
        └── Refused                 an HTTP answer other than 200 (exchange.api.responses)
            └── AuditUnavailable    the audit log could not record a request: 503, nothing sent

Errors that are also a ``ValueError`` (bad input) keep that base too, so callers that catch
``ValueError`` at a boundary keep working. Third-party exceptions are mapped to these at the
boundary where they arise.

Messages never carry patient data (names, ID numbers, clinical values): they name the field
and the rule that failed.
"""

from __future__ import annotations


class HieError(Exception):
    """The coded base class: a stable ``code`` and a human ``message``."""

    code = "hie"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class DomainError(HieError):
    code = "domain"


class ConsentError(HieError):
    code = "consent"


class AuditError(HieError):
    code = "audit"


class AdapterError(HieError):
    code = "adapter"


class InvalidResidentId(DomainError):
    code = "resident_id.invalid"


class InvalidEnvelope(DomainError):
    code = "envelope.invalid"


class UnknownInstitution(DomainError):
    code = "institution.unknown"
