"""The audit log's PostgreSQL store: append-only, hash-chained, appended before data leaves.

Appends take a transaction-scoped advisory lock so that concurrent appenders chain in commit
order. Triggers refuse UPDATE, DELETE and TRUNCATE: no API of the exchange can change a
record, and an operator who disables the triggers still breaks the chain.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from audit.chain import GENESIS, first_broken, link_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq bigint PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    patient_id uuid,
    person text,
    record jsonb NOT NULL,
    record_text text NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL);
CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient_id, seq);
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hie-audit-append'))"


class AuditWriteError(Exception):
    code = "audit.write_failed"


class AuditStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_schema(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-audit-schema'))")
            await conn.execute(SCHEMA)

    async def append(self, record: dict[str, Any], recorded_at: datetime) -> int:
        """Append one record durably and return its sequence number.

        Raises AuditWriteError on any failure: the caller must then send no data.
        """
        record = {**record, "recorded_at": recorded_at.isoformat()}
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        stored = json.loads(text)
        patient = record.get("patient_id")
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(_LOCK)
                last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                seq = (last["seq"] + 1) if last else 1
                previous = bytes(last["hash"]) if last else GENESIS
                await conn.execute(
                    "INSERT INTO audit_log (seq, recorded_at, patient_id, person, record, "
                    "record_text, prev_hash, hash) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)",
                    seq, recorded_at, UUID(patient) if patient else None, record.get("person"),
                    text, text, previous, link_hash(previous, stored))
                return int(seq)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise AuditWriteError("the audit record could not be written") from exc

    async def for_patient(self, patient_id: UUID, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        rows = await self.pool.fetch(
            "SELECT seq, record_text FROM audit_log WHERE patient_id = $1 ORDER BY seq LIMIT $2",
            patient_id, limit)
        return [(r["seq"], json.loads(r["record_text"])) for r in rows]

    async def verify(self) -> int | None:
        """The seq of the first record whose chain does not hold, or None if all hold."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = [
                (r["seq"], json.loads(r["record_text"]), bytes(r["prev_hash"]), bytes(r["hash"]))
                async for r in conn.cursor(
                    "SELECT seq, record_text, prev_hash, hash FROM audit_log ORDER BY seq")
            ]
        return first_broken(rows)
