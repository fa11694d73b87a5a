"""The identity steward's desk (MPI 管理员): decides the merges members could not make alone.

A steward reads the queue of pending merge requests over HTTP and approves or rejects each
with a reason. The decision enters the ledger as a ``merge`` item naming the request, signed
by the exchange's own desk ``mpi-steward`` (level mpi_steward); the ledger's checks then
join the two identities in the same commit (approve) or only close the request (reject).
The item's source id is the request's, so a decision sent twice is recorded once. The steward
may also undo a merge it approved: an ``unmerge`` naming the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain.problems import Problem
from exchange.ingest.desk import Desk, DeskName, Sent

CODE = "mpi-steward"
NAME = "区域患者主索引管理 (identity steward)"
LEVEL = "mpi_steward"
DESK = DeskName(CODE, NAME, LEVEL, "steward.unanswered")


class Queue(Protocol):
    """The projected merge requests (projections.merge_requests.MergeRequestReader)."""

    async def request(self, rid: UUID) -> Any: ...


class ResidentIds(Protocol):
    """The resident ID of an identity (projections.postgres.PatientRecordReader)."""

    async def resident_id(self, members: Sequence[UUID]) -> str | None: ...


@dataclass(frozen=True)
class Decided:
    """A decision's outcome: the request as it stood when asked, and what the ledger said."""

    request: Any  # the queue's row (None: no such request)
    sent: Sent


class Steward:
    def __init__(self, desk: Desk, *, queue: Queue, residents: ResidentIds) -> None:
        self.desk = desk
        self._queue = queue
        self._residents = residents

    async def ensure_registered(self) -> None:
        await self.desk.ensure_registered()

    async def decide(
        self, rid: UUID, decision: str, *, steward: str, reason: str, now: datetime
    ) -> Decided:
        """Send the steward's decision on the request ``rid``: ``approve`` or ``reject`` a
        pending one (else the ledger refuses, ``merge.request_not_pending``), or ``undo`` an
        approved one (``merge.request_not_approved``)."""
        row = await self._queue.request(rid)
        if row is None:
            return Decided(None, Sent(False, [Problem("merge.request_unknown", "no such request")]))
        wanted = "approved" if decision == "undo" else "pending"
        if row["status"] != wanted:  # the ledger would refuse it too; say so plainly
            code = (
                "merge.request_not_approved" if decision == "undo" else "merge.request_not_pending"
            )
            return Decided(
                row, Sent(False, [Problem(code, f"the merge request is {row['status']}")])
            )
        survivor = await self._residents.resident_id([row["survivor"]])
        if survivor is None:  # the rules only hold merges into a resident
            raise RuntimeError("a pending merge whose survivor has no resident ID")
        payload: dict[str, Any] = {
            "patient": {"resident_id": survivor},
            "request": row["reference"],
            "steward": steward,
            "reason": reason,
        }
        if decision == "undo":  # the two are two people again (an approved request only)
            item = {"source_id": f"undo-{rid}", "kind": "unmerge", "payload": payload}
        else:
            payload["decision"] = decision
            item = {"source_id": f"decision-{rid}", "kind": "merge", "payload": payload}
        return Decided(row, await self.desk.send(item, now=now))
