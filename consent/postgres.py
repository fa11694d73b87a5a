"""Consent state for decisions: consents from the patient-record projection, and break-glass
grants (operational state of the gate, kept in PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from collections.abc import Sequence
from uuid import UUID, uuid4

import asyncpg

from consent.decision import BREAK_GLASS_TTL, BreakGlassGrant, ConsentRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS break_glass_grants (
    grant_id uuid PRIMARY KEY, person text NOT NULL, institution text NOT NULL,
    patient_id uuid NOT NULL, reason_code text NOT NULL, reason text NOT NULL,
    granted_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS break_glass_grants_patient ON break_glass_grants (patient_id, person);
"""


class ConsentState:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_schema(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-consent-schema'))")
            await conn.execute(SCHEMA)

    async def consents(self, patient_id: UUID | Sequence[UUID]) -> list[ConsentRecord]:
        """The consents given under this identity (or any of these merged identities)."""
        ids = [patient_id] if isinstance(patient_id, UUID) else list(patient_id)
        rows = await self.pool.fetch(
            "SELECT consent_id, consent_type, scope, purposes, valid_from, valid_to "
            "FROM consents WHERE patient_id = ANY($1)", ids)
        return [ConsentRecord(r["consent_id"], r["consent_type"], tuple(r["scope"]),
                              tuple(r["purposes"]), r["valid_from"], r["valid_to"]) for r in rows]

    async def grants(self, patient_id: UUID, person: str) -> list[BreakGlassGrant]:
        rows = await self.pool.fetch(
            "SELECT grant_id, person, patient_id, reason_code, expires_at FROM break_glass_grants "
            "WHERE patient_id = $1 AND person = $2", patient_id, person)
        return [BreakGlassGrant(r["grant_id"], r["person"], r["patient_id"], r["reason_code"],
                                r["expires_at"]) for r in rows]

    async def grant_break_glass(self, *, person: str, institution: str, patient_id: UUID,
                                reason_code: str, reason: str, now: datetime) -> BreakGlassGrant:
        grant = BreakGlassGrant(uuid4(), person, patient_id, reason_code, now + BREAK_GLASS_TTL)
        await self.pool.execute(
            "INSERT INTO break_glass_grants (grant_id, person, institution, patient_id, "
            "reason_code, reason, granted_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            grant.grant_id, person, institution, patient_id, reason_code, reason, now,
            grant.expires_at)
        return grant
