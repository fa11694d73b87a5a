"""What every adapter returns: the canonical items it made, why it left anything out, and what
it sends but warns about."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from domain.clinical import Item, PatientPayload, parse_payload
from domain.intake import item_problems
from domain.problems import Problem, problems_from_validation
from domain.resident_id import discrepancies


@dataclass(frozen=True, slots=True)
class IngestWarning:
    """Something an item that is sent says that looks wrong: a stable ``code``, a ``message``
    that never repeats an input value, and where (the item's ``source_id`` and the payload
    ``field``)."""

    code: str
    message: str
    source_id: str
    field: str

    @property
    def where(self) -> str:
        return f"source_id {self.source_id} {self.field}"

    def as_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "message": self.message,
            "source_id": self.source_id,
            "field": self.field,
        }

    def __str__(self) -> str:
        return f"{self.where}: {self.message} [{self.code}]"


@dataclass
class IngestReport:
    """``items`` are canonical envelope items (dicts) the gateway would accept as they are;
    ``problems`` say what was refused and where (never repeating an input value); ``skipped``
    names what was deliberately not mapped (a segment or resource type the exchange does not
    hold); ``warnings`` what is sent but looks wrong."""

    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def extend(self, other: IngestReport) -> None:
        self.items += other.items
        self.problems += other.problems
        self.skipped += other.skipped

    @property
    def warnings(self) -> list[IngestWarning]:
        """The warnings about the items as they stand: taken from the items themselves, so
        every adapter gets them alike and an item left out takes its warnings with it."""
        return [w for item in self.items for w in item_warnings(item)]


def check_item(item: dict[str, Any], *, where: str, source_id: str | None) -> list[Problem]:
    """The gateway's own item checks (its models, then the rules new items meet,
    domain/intake.py), so that nothing leaves an adapter that it would refuse."""
    try:
        parsed = Item.model_validate(item)
        payload = parse_payload(parsed.kind, parsed.payload)
    except ValidationError as exc:
        return problems_from_validation(exc, prefix=where, source_id=source_id)
    return item_problems(payload, prefix=where, source_id=source_id)


def item_warnings(item: dict[str, Any]) -> list[IngestWarning]:
    """A Patient item whose gender or birth date contradicts its resident ID
    (domain.resident_id.discrepancies): each contradiction a warning. Other kinds have none."""
    if item.get("kind") != "patient":
        return []
    try:
        payload = PatientPayload.model_validate(item.get("payload"))
    except ValidationError:  # refused by check_item, so never among a report's items
        return []
    found = discrepancies(
        payload.patient.resident_id, gender=payload.gender, birth_date=payload.birth_date
    )
    source_id = str(item.get("source_id"))
    return [IngestWarning(d.code, d.message, source_id, f"payload.{d.field}") for d in found]
