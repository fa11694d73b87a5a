"""What every adapter returns: the canonical items it made and why it left anything out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from domain.clinical import Item, parse_payload
from domain.problems import Problem, problems_from_validation


@dataclass
class IngestReport:
    """``items`` are canonical envelope items (dicts) the gateway would accept as they are;
    ``problems`` say what was refused and where (never repeating an input value); ``skipped``
    names what was deliberately not mapped (a segment or resource type the exchange does not
    hold)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def extend(self, other: IngestReport) -> None:
        self.items += other.items
        self.problems += other.problems
        self.skipped += other.skipped


def check_item(item: dict[str, Any], *, where: str, source_id: str | None) -> list[Problem]:
    """The gateway's own item checks, so that nothing leaves an adapter that it would refuse."""
    try:
        parsed = Item.model_validate(item)
        parse_payload(parsed.kind, parsed.payload)
    except ValidationError as exc:
        return problems_from_validation(exc, prefix=where, source_id=source_id)
    return []
