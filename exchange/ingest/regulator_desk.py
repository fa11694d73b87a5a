"""The regulator's desk: what the regulator does to a patient's record enters the ledger as a
signed submission of the exchange's own desk ``regulator-desk`` (level regulator).

Today that is lifting a seal (病历封存的解除): an institution lifts only its own seals, and a
seal placed by a member that no longer answers, or placed to hide a record from the patient's
other doctors, would otherwise stand for ever. The regulator's ``unseal`` lifts every seal
on the person, whoever placed it; the audit log keeps who asked and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from domain.problems import Problem
from exchange.ingest.desk import Desk, DeskName, Sent

CODE = "regulator-desk"
NAME = "卫生健康行政部门 (regulator)"
LEVEL = "regulator"
DESK = DeskName(CODE, NAME, LEVEL, "regulator.unanswered")


class ResidentIds(Protocol):
    """The resident ID of an identity (projections.postgres.PatientRecordReader)."""

    async def resident_id(self, members: Sequence[UUID]) -> str | None: ...


class RegulatorDesk:
    def __init__(self, desk: Desk, *, residents: ResidentIds) -> None:
        self.desk = desk
        self._residents = residents

    async def ensure_registered(self) -> None:
        await self.desk.ensure_registered()

    async def lift_seals(self, members: Sequence[UUID], *, reason: str, now: datetime) -> Sent:
        """Lift every seal on the person whose identities are ``members``."""
        resident_id = await self._residents.resident_id(members)
        if resident_id is None:
            return Sent(
                False,
                [Problem("patient.no_resident_id", "the patient has no resident ID to name")],
            )
        item = {
            "source_id": f"unseal-{now.timestamp():.6f}",
            "kind": "unseal",
            "payload": {
                "patient": {"resident_id": resident_id},
                "reason": reason,
                "at": now.isoformat(),
            },
        }
        return await self.desk.send(item, now=now)
