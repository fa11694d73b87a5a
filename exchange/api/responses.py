"""What the read API sends: FHIR JSON and plain JSON responses, refusals as
``OperationOutcome``, and the disclosure rule that says how an audit record names what a
response disclosed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from exchange.api.fhir import FHIR_JSON
from exchange.errors import ExchangeError

Handler = Callable[[Request, str], Awaitable[Response]]


class Refused(ExchangeError):
    """An answer other than 200: status, stable code, message, FHIR issue type."""

    def __init__(self, status: int, code: str, message: str, issue_type: str) -> None:
        super().__init__(message, code=code)
        self.status, self.issue_type = status, issue_type


LISTED = 20  # up to this many disclosed resources are listed; beyond, counted and digested


def disclosure(disclosed: list[str]) -> dict[str, Any]:
    """What an audit record says was disclosed. A handful of resources are listed; a whole
    record (hundreds) is counted, typed and digested (SHA-256 of the sorted "Type/id" lines):
    the list itself follows from the ledger as of the record's position and decision
    (``/audit/disclosed?seq=`` rebuilds and checks it), and a record under ~2 kB costs the
    database a fraction of one carrying kilobytes of ids on every read."""
    types = sorted({d.split("/")[0] for d in disclosed if "/" in d})
    if len(disclosed) <= LISTED:
        return {"disclosed": disclosed, "resource_types": types,
                "disclosed_count": len(disclosed)}
    return {"disclosed": [], "disclosed_count": len(disclosed), "resource_types": types,
            "disclosed_sha256": disclosed_digest(disclosed)}


def disclosed_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def fhir_response(body: bytes | dict[str, Any], status: int = 200, request_id: str = "") -> Response:
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return Response(content, status, media_type=FHIR_JSON, headers={"X-Request-Id": request_id})


def json_response(doc: Any, request_id: str, status: int = 200) -> Response:
    return Response(json.dumps(doc, ensure_ascii=False), status, media_type="application/json",
                    headers={"X-Request-Id": request_id})
