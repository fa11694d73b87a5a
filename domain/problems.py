"""Problems: why a submission, or one item of it, cannot be accepted.

A problem names the item (its index and source_id), the field, a stable code and a message
that tells the sender what to fix. It never repeats the offending value, which may be
patient data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    field: str = ""
    item: int | None = None
    source_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    def __str__(self) -> str:
        where = f"events[{self.item}]" if self.item is not None else "envelope"
        if self.source_id:
            where += f" (source_id {self.source_id})"
        if self.field:
            where += f" {self.field}"
        return f"{where}: {self.message} [{self.code}]"


def problems_from_validation(
    exc: ValidationError, *, prefix: str = "", item: int | None = None, source_id: str | None = None
) -> list[Problem]:
    """Turn pydantic's errors into problems, leaving out the input values."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(part) for part in err["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        message = err["msg"].removeprefix("Value error, ")
        problems.append(Problem(err["type"], message, field, item, source_id))
    return problems
