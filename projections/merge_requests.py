"""Merges waiting for the identity steward, and how each was decided (the steward's queue).

Written by the patient-record runner in the same transaction as the rest of a ledger batch.
A row is one ``MergeRequest`` (domain/merge_request.py): who asked, which two identities, and
once decided, by which steward, when and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from domain.identity import DEMOGRAPHICS_CONTEXT, IDENTIFIER_CONTEXT
from domain.merge_request import DECISIONS, MergeRequest
from projections.batch import Changes
from projections.fields import FieldCipher

SCHEMA = """
CREATE TABLE IF NOT EXISTS merge_requests (
    request_id uuid PRIMARY KEY, reference text NOT NULL, institution text NOT NULL,
    survivor uuid NOT NULL, merged uuid NOT NULL, status text NOT NULL,
    requested_at timestamptz NOT NULL, position bigint NOT NULL, steward text,
    decided_by text, decided_at timestamptz, decided_position bigint, reason text);
DROP INDEX IF EXISTS merge_requests_pending;
ALTER TABLE merge_requests ADD COLUMN IF NOT EXISTS undone_at timestamptz;
ALTER TABLE merge_requests ADD COLUMN IF NOT EXISTS undone_by text;
ALTER TABLE merge_requests ADD COLUMN IF NOT EXISTS undo_reason text;
CREATE INDEX IF NOT EXISTS merge_requests_status
    ON merge_requests (status, requested_at, request_id);
CREATE TABLE IF NOT EXISTS merge_request_events (
    position bigint PRIMARY KEY, request_id uuid NOT NULL, action text NOT NULL,
    status text NOT NULL, at timestamptz NOT NULL);
"""
TABLES = ("merge_requests", "merge_request_events")
# Each step of a request, by ledger position: what the notifier tells the requesting
# institution (its request waits; the steward approved, rejected or undid it).
_STEP = (
    "INSERT INTO merge_request_events (position, request_id, action, status, at) "
    "VALUES ($1, $2, $3, $4, $5)"
)


def _requested(changes: Changes, position: int, event: Any) -> None:
    changes.op(
        "INSERT INTO merge_requests (request_id, reference, institution, survivor, merged, "
        "status, requested_at, position) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
        event.originator_id,
        event.reference,
        event.institution,
        event.survivor,
        event.merged,
        event.timestamp,
        position,
    )
    changes.op(_STEP, position, event.originator_id, "request", "pending", event.timestamp)


def _decided(changes: Changes, position: int, event: Any) -> None:
    changes.op(
        "UPDATE merge_requests SET status = $2, steward = $3, decided_by = $4, "
        "decided_at = $5, decided_position = $6, reason = $7 WHERE request_id = $1",
        event.originator_id,
        DECISIONS[event.decision],
        event.steward,
        f"{event.institution}/{event.source_id}",
        event.timestamp,
        position,
        event.reason,
    )
    status = DECISIONS[event.decision]
    changes.op(_STEP, position, event.originator_id, event.decision, status, event.timestamp)


def _undone(changes: Changes, position: int, event: Any) -> None:
    changes.op(
        "UPDATE merge_requests SET status = 'undone', undone_at = $2, undone_by = $3, "
        "undo_reason = $4 WHERE request_id = $1",
        event.originator_id,
        event.timestamp,
        event.steward,
        event.reason,
    )
    changes.op(_STEP, position, event.originator_id, "undo", "undone", event.timestamp)


HANDLERS: dict[type, Callable[[Changes, int, Any], None]] = {
    MergeRequest.Requested: _requested,  # type: ignore[attr-defined]
    MergeRequest.Decided: _decided,  # type: ignore[attr-defined]
    MergeRequest.Undone: _undone,  # type: ignore[attr-defined]
}


async def steps_after(pool: asyncpg.Pool, position: int, limit: int = 200) -> list[asyncpg.Record]:
    """Requests' steps after a ledger position, in order, with their request."""
    return list(
        await pool.fetch(
            "SELECT e.position, e.action, e.status, e.at, r.request_id, r.reference, "
            "r.institution, r.survivor, r.merged FROM merge_request_events e "
            "JOIN merge_requests r USING (request_id) WHERE e.position > $1 "
            "ORDER BY e.position LIMIT $2",
            position,
            limit,
        )
    )


class MergeRequestReader:
    """The steward's queue, with what a steward compares to decide: each identity's
    registration (birth date, sex), the demographics its institutions sent, and every
    identifier linked to it (with the institution that linked it)."""

    def __init__(self, pool: asyncpg.Pool, fields: FieldCipher) -> None:
        self._pool = pool
        self._fields = fields  # identifiers and demographics are sealed at rest

    async def requests(self, status: str, limit: int = 100) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT r.*, i.name AS institution_name FROM merge_requests r "
                "LEFT JOIN institutions i ON i.code = r.institution "
                "WHERE r.status = $1 ORDER BY r.requested_at, r.request_id LIMIT $2",
                status,
                limit,
            )
        )

    async def request(self, rid: UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow("SELECT * FROM merge_requests WHERE request_id = $1", rid)

    async def identities(self, pids: Sequence[UUID]) -> dict[UUID, dict[str, Any]]:
        """Per patient id: its registration, demographics and identifiers."""
        rows = await self._pool.fetch(
            "SELECT patient_id, birth_date, sex, temporary, merged_into, demographics "
            "FROM patients WHERE patient_id = ANY($1)",
            list(pids),
        )
        found: dict[UUID, dict[str, Any]] = {
            r["patient_id"]: {
                "patient_id": str(r["patient_id"]),
                "birth_date": r["birth_date"].isoformat() if r["birth_date"] else None,
                "sex": r["sex"],
                "temporary": r["temporary"],
                "merged_into": str(r["merged_into"]) if r["merged_into"] else None,
                "demographics": json.loads(
                    self._fields.open(r["demographics"], DEMOGRAPHICS_CONTEXT)
                )
                if r["demographics"]
                else None,
                "identifiers": [],
            }
            for r in rows
        }
        # One index lookup per identity (LATERAL, OFFSET 0): a planner without statistics
        # would rather read the whole index of identifiers for a long list.
        for r in await self._pool.fetch(
            "SELECT p.id AS patient_id, i.system, i.value_sealed, i.institution "
            "FROM unnest($1::uuid[]) p(id) CROSS JOIN LATERAL (SELECT system, value_sealed, "
            "institution, position FROM patient_identifiers WHERE patient_id = p.id OFFSET 0) i "
            "ORDER BY i.position, i.system",
            list(pids),
        ):
            found[r["patient_id"]]["identifiers"].append(
                {
                    "system": r["system"],
                    "value": self._fields.open(r["value_sealed"], IDENTIFIER_CONTEXT),
                    "institution": r["institution"],
                }
            )
        return found
