"""What the read API sends: FHIR JSON and plain JSON responses, and refusals — the coded
exception a handler (or the gate) raises for any answer other than 200, which the gate
audits and sends as an ``OperationOutcome``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from starlette.responses import Response

from consent.decision import Decision, Reason
from exchange.api.fhir import FHIR_JSON, operation_outcome
from exchange.errors import ExchangeError


class Refused(ExchangeError):
    """An answer other than 200: status, stable code, message, FHIR issue type. The gate
    records it before sending it, about ``patient_id`` and for ``purpose`` (None: the call's),
    with ``decision`` when one was taken (its reasons are recorded) and ``extra`` fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        issue_type: str = "forbidden",
        *,
        patient_id: UUID | None = None,
        purpose: str | None = None,
        decision: Decision | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status, self.issue_type = status, issue_type
        self.patient_id, self.purpose = patient_id, purpose
        self.decision, self.extra = decision, extra

    @classmethod
    def because(
        cls, status: int, reason: Reason, issue_type: str = "forbidden", **about: Any
    ) -> Refused:
        return cls(status, reason.code, reason.message, issue_type, **about)

    @property
    def reason(self) -> Reason:
        return Reason(self.code, self.message)

    def response(self, request_id: str) -> Response:
        return fhir_response(
            operation_outcome(self.code, self.message, issue_type=self.issue_type),
            self.status,
            request_id,
        )


class AuditUnavailable(Refused):
    """The audit log could not record the request: nothing is sent (and, the log being
    down, this refusal cannot be recorded either)."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "audit.unavailable",
            "the audit log could not record this request, so no data is sent; try again shortly",
            "exception",
        )


def fhir_response(
    body: bytes | dict[str, Any], status: int = 200, request_id: str = ""
) -> Response:
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return Response(content, status, media_type=FHIR_JSON, headers={"X-Request-Id": request_id})


def json_response(doc: Any, request_id: str, status: int = 200) -> Response:
    return Response(
        json.dumps(doc, ensure_ascii=False),
        status,
        media_type="application/json",
        headers={"X-Request-Id": request_id},
    )


# A spreadsheet takes a cell that starts with one of these as a formula (OWASP's CSV
# injection list): a token's subject or a route could then run in the regulator's office.
_FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as text: a string that a spreadsheet would
    read as a formula gets a leading apostrophe (what spreadsheets themselves do to mark
    text); numbers, booleans and empty cells are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_LEAD):
        return "'" + value
    return value
