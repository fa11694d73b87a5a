"""Rules a new item meets where it comes in (the gateway, and every adapter before it), on top
of its model: the ledger's stored items are not read against them again.

The projections replay every accepted envelope through the payload models
(domain/submission.py), and a replay that refuses one stops. So a rule made after the ledger
took items that break it lives here, applied to what comes in (exchange/ingest/checks.py,
adapters/report.py ``check_item``), while the models keep reading what was accepted. Today:
the GB/T 2260 province-level division of every resident ID an item names
(domain/resident_id.py ``check_division``), which the exchange accepted unchecked before.
"""

from __future__ import annotations

from pydantic import BaseModel

from domain.errors import InvalidResidentId
from domain.problems import Problem
from domain.resident_id import check_division
from domain.submission import ValidSubmission
from domain.values import PatientRef


def item_problems(
    payload: BaseModel,
    *,
    prefix: str = "payload",
    item: int | None = None,
    source_id: str | None = None,
) -> list[Problem]:
    """Why a validated payload may not come in (none: it may), each problem at its field
    under ``prefix``. A payload names its people by PatientRef fields of its own (``patient``,
    a merge's ``merged``, a consent's ``guardian``, ...)."""
    problems = []
    for name, value in payload:
        if not isinstance(value, PatientRef) or value.resident_id is None:
            continue
        try:
            check_division(value.resident_id)
        except InvalidResidentId as exc:
            field = f"{prefix}.{name}.resident_id"
            problems.append(Problem(exc.code, exc.message, field, item, source_id))
    return problems


def intake_problems(valid: ValidSubmission) -> list[Problem]:
    """Why a validated submission may not come in: every item's problems, by its index."""
    return [
        problem
        for it in valid.items
        for problem in item_problems(it.payload, item=it.index, source_id=it.source_id)
    ]
