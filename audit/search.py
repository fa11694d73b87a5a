"""Regulator searches over the audit log (pure): FHIR-style parameters → a SQL condition.

Parameters (AuditEvent search, IHE BALP): ``patient``, ``agent`` (person), ``institution``,
``date`` (repeatable, with ge/gt/le/lt/eq prefixes), ``outcome`` (0 success, 4 refused),
``purpose``, ``subtype`` (action), ``break-glass`` (true/false), ``_count``, ``_offset``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID

from domain.errors import AuditError

MAX_COUNT = 1000
_PREFIXES = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "eq": "="}
_OUTCOMES = {"0": ("permit", "accepted"), "4": ("deny", "rejected")}
KNOWN = {
    "patient",
    "agent",
    "institution",
    "date",
    "outcome",
    "purpose",
    "subtype",
    "break-glass",
    "_count",
    "_offset",
}


class SearchError(AuditError, ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass
class Query:
    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    count: int = 100
    offset: int = 0

    def add(self, template: str, value: Any) -> None:
        self.args.append(value)
        self.conditions.append(template.format(f"${len(self.args)}"))

    @property
    def where(self) -> str:
        return " AND ".join(self.conditions) or "TRUE"


def _instant(text: str, upper: bool) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if upper else time.min, UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SearchError(
            "search.date",
            "date takes YYYY-MM-DD or a full instant with an "
            "offset, after an optional ge/gt/le/lt/eq prefix",
        ) from None
    if moment.tzinfo is None:
        raise SearchError("search.date", "a date-time in a search needs a timezone offset")
    return moment


def parse_search(params: Mapping[str, Sequence[str]], *, with_paging: bool = True) -> Query:
    """Build the query, or raise SearchError naming the parameter that is wrong."""
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise SearchError("search.unknown", f"unknown search parameter(s): {', '.join(unknown)}")
    q = Query()
    for value in params.get("patient", []):
        try:
            # The records of this patient, and those that touched several, this one among them.
            q.add(
                "seq IN (SELECT seq FROM audit_log WHERE patient_id = {0} UNION ALL "
                "SELECT seq FROM audit_patients WHERE patient_id = {0})",
                UUID(value.removeprefix("Patient/")),
            )
        except ValueError:
            raise SearchError("search.patient", "patient takes a patient id") from None
    for name, column in (
        ("agent", "person"),
        ("institution", "institution"),
        ("purpose", "purpose"),
        ("subtype", "action"),
    ):
        for value in params.get(name, []):
            q.add(f"{column} = {{}}", value)
    for value in params.get("date", []):
        prefix = value[:2] if value[:2] in _PREFIXES else "eq"
        text = value[2:] if value[:2] in _PREFIXES else value
        if prefix == "eq" and len(text) == 10:
            q.add("recorded_at >= {}", _instant(text, upper=False))
            q.add("recorded_at <= {}", _instant(text, upper=True))
        else:
            q.add(
                f"recorded_at {_PREFIXES[prefix]} {{}}",
                _instant(text, upper=prefix in ("le", "gt")),
            )
    for value in params.get("outcome", []):
        if value not in _OUTCOMES:
            raise SearchError("search.outcome", "outcome takes 0 (success) or 4 (refused)")
        q.add("decision = ANY({})", list(_OUTCOMES[value]))
    for value in params.get("break-glass", []):
        if value not in ("true", "false"):
            raise SearchError("search.break_glass", "break-glass takes true or false")
        q.add("break_glass = {}", value == "true")
    if with_paging:
        try:
            q.count = min(int(params.get("_count", ["100"])[-1]), MAX_COUNT)
            q.offset = int(params.get("_offset", ["0"])[-1])
        except ValueError:
            raise SearchError("search.paging", "_count and _offset take whole numbers") from None
        if q.count < 1 or q.offset < 0:
            raise SearchError("search.paging", "_count must be positive and _offset not negative")
    return q
