"""The shared patient record in PostgreSQL (asyncpg), following the ledger.

Each batch of ledger events is applied in ONE transaction together with the projection's
tracked position (locked FOR UPDATE), so a restart, or a second runner, never applies an
event twice. Every entry row keeps the ledger position at which it became current
(``valid_from``) and, later, stopped being current (``valid_to``), for "as it stood then".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from domain.clinical import ConsentPayload, PatientPayload
from domain.identity import RESIDENT_ID_SYSTEM
from domain.submission import validate_envelope
from projections.render import dumps, entry_id, render

log = logging.getLogger(__name__)

NAME = "patient_record"

SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_position (
    name text PRIMARY KEY, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS institutions (
    code text PRIMARY KEY, name text NOT NULL, level text NOT NULL, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id uuid PRIMARY KEY, birth_date date NOT NULL, sex text NOT NULL,
    demographics jsonb, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS patient_identifiers (
    system text NOT NULL, value text NOT NULL, patient_id uuid NOT NULL,
    institution text, position bigint NOT NULL, PRIMARY KEY (system, value));
CREATE INDEX IF NOT EXISTS patient_identifiers_patient ON patient_identifiers (patient_id);
CREATE TABLE IF NOT EXISTS record_entries (
    entry_id uuid PRIMARY KEY, patient_id uuid NOT NULL, institution text NOT NULL,
    source_id text NOT NULL, kind text NOT NULL, submission_id text NOT NULL,
    resource text NOT NULL, valid_from bigint NOT NULL, valid_to bigint);
CREATE INDEX IF NOT EXISTS record_entries_patient ON record_entries (patient_id, valid_from);
CREATE TABLE IF NOT EXISTS consents (
    consent_id uuid PRIMARY KEY, patient_id uuid NOT NULL, institution text NOT NULL,
    consent_type text NOT NULL, scope text[] NOT NULL, purposes text[] NOT NULL,
    valid_from timestamptz NOT NULL, valid_to timestamptz, signed_by text NOT NULL,
    resource text NOT NULL, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS consents_patient ON consents (patient_id);
"""

TABLES = ("institutions", "patients", "patient_identifiers", "record_entries", "consents")

ReadLedger = Callable[[int, int], Awaitable[Sequence[tuple[int, Any]]]]


async def create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-projection-schema'))")
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO projection_position (name, position) VALUES ($1, 0) "
            "ON CONFLICT (name) DO NOTHING", NAME)


class PatientRecordProjection:
    """Follows the ledger and keeps the shared patient record current."""

    def __init__(self, pool: asyncpg.Pool, read: ReadLedger, *, batch: int = 500) -> None:
        self.pool = pool
        self.read = read
        self.batch = batch
        self._advanced = asyncio.Condition()

    async def position(self) -> int:
        return int(await self.pool.fetchval(
            "SELECT position FROM projection_position WHERE name = $1", NAME))

    async def catch_up_once(self) -> int:
        """Apply the next batch of ledger events; return how many were applied."""
        start = await self.position()
        events = await self.read(start, self.batch)
        if not events:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME)
            if current != start:
                return 0  # another runner moved on meanwhile; read again from there
            for position, event in events:
                await self._apply(conn, position, event)
            await conn.execute(
                "UPDATE projection_position SET position = $2 WHERE name = $1", NAME, events[-1][0])
        async with self._advanced:
            self._advanced.notify_all()
        return len(events)

    async def run(self, stop: asyncio.Event, idle: float = 0.05) -> None:
        """Follow the ledger until ``stop``; any failure restarts from the tracked position."""
        while not stop.is_set():
            try:
                if await self.catch_up_once() == 0:
                    try:
                        await asyncio.wait_for(stop.wait(), idle)
                    except TimeoutError:
                        pass
            except Exception:
                log.exception("projection %s failed; restarting from its tracked position", NAME)
                await asyncio.sleep(1.0)

    async def wait_for(self, position: int, timeout: float = 30.0) -> None:
        """Wait until the projection has applied the ledger up to ``position``."""
        async def reached() -> None:
            while await self.position() < position:
                async with self._advanced:
                    try:
                        await asyncio.wait_for(self._advanced.wait(), 0.1)
                    except TimeoutError:
                        pass
        await asyncio.wait_for(reached(), timeout)

    async def rebuild(self) -> None:
        """Forget every row and the position; the runner then replays the whole ledger."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME)
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
            await conn.execute("UPDATE projection_position SET position = 0 WHERE name = $1", NAME)

    # Applying one ledger event ----------------------------------------------------------------

    async def _apply(self, conn: asyncpg.Connection, position: int, event: Any) -> None:
        kind = type(event).__qualname__
        if kind == "Institution.Registered":
            await conn.execute(
                "INSERT INTO institutions (code, name, level, position) VALUES ($1, $2, $3, $4)",
                event.code, event.name, event.level, position)
        elif kind == "PatientIdentity.Registered":
            await conn.execute(
                "INSERT INTO patients (patient_id, birth_date, sex, position) "
                "VALUES ($1, $2::text::date, $3, $4)",
                event.originator_id, event.birth_date, event.sex, position)
            await self._identifier(conn, RESIDENT_ID_SYSTEM, event.resident_id,
                                   event.originator_id, None, position)
        elif kind == "PatientIdentity.IdentifierLinked":
            await self._identifier(conn, event.system, event.value, event.originator_id,
                                   event.institution, position)
        elif kind == "Submission.Accepted":
            await self._submission(conn, position, event)

    async def _identifier(self, conn: asyncpg.Connection, system: str, value: str,
                          patient_id: UUID, institution: str | None, position: int) -> None:
        await conn.execute(
            "INSERT INTO patient_identifiers (system, value, patient_id, institution, position) "
            "VALUES ($1, $2, $3, $4, $5)", system, value, patient_id, institution, position)

    async def _submission(self, conn: asyncpg.Connection, position: int, event: Any) -> None:
        valid, problems = validate_envelope(json.loads(event.envelope))
        if valid is None:  # accepted once, so this is a code change that broke replay
            raise RuntimeError(f"ledger event at position {position} no longer validates: "
                               f"{[p.code for p in problems]}")
        institution = valid.institution
        name = await conn.fetchval("SELECT name FROM institutions WHERE code = $1", institution)
        for item, patient_id in zip(valid.items, event.patient_ids, strict=True):
            pid = UUID(patient_id)
            rid = entry_id(institution, item.source_id)
            payload = item.payload
            if isinstance(payload, PatientPayload):
                await conn.execute(
                    "UPDATE patients SET demographics = $2 WHERE patient_id = $1",
                    pid, payload.model_dump_json(exclude={"patient"}))
                continue
            resource = dumps(render(item.kind, payload, resource_id=rid, patient_id=pid,
                                    institution=institution, institution_name=name or institution))
            if isinstance(payload, ConsentPayload):
                await conn.execute(
                    "INSERT INTO consents (consent_id, patient_id, institution, consent_type, "
                    "scope, purposes, valid_from, valid_to, signed_by, resource, position) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    rid, pid, institution, payload.consent_type, list(payload.scope),
                    list(payload.purposes), payload.valid_from, payload.valid_to,
                    payload.signed_by, resource, position)
                continue
            await conn.execute(
                "INSERT INTO record_entries (entry_id, patient_id, institution, source_id, kind, "
                "submission_id, resource, valid_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                rid, pid, institution, item.source_id, item.kind, valid.submission_id,
                resource, position)


class PatientRecordReader:
    """Read-side queries over the shared patient record."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find_patient(self, system: str, value: str) -> UUID | None:
        found = await self.pool.fetchval(
            "SELECT patient_id FROM patient_identifiers WHERE system = $1 AND value = $2",
            system, value)
        return found if isinstance(found, UUID) else None

    async def patient(self, patient_id: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT patient_id, birth_date, sex, demographics FROM patients WHERE patient_id = $1",
            patient_id)

    async def identifiers(self, patient_id: UUID) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT system, value FROM patient_identifiers WHERE patient_id = $1 ORDER BY position",
            patient_id)
        return [(r["system"], r["value"]) for r in rows]

    async def current_entries(self, patient_id: UUID) -> list[asyncpg.Record]:
        """The entries current now: (entry_id, kind, institution, resource text)."""
        return await self.pool.fetch(
            "SELECT entry_id, kind, institution, resource FROM record_entries "
            "WHERE patient_id = $1 AND valid_to IS NULL ORDER BY valid_from, entry_id",
            patient_id)
