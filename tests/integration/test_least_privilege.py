"""Issue: the application connected to PostgreSQL as a superuser, so its own credentials could
drop the audit log's append-only triggers. Now it runs as an application role that only reads
the audit tables (records are appended through the owner's function) and can neither alter,
truncate nor drop them or their triggers, nor delete from the ledger; the owner role
(HIE_DATABASE_URL's user) makes the schemas and the role."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from exchange.bootstrap import Endpoints, open_runtime
from exchange.settings import Settings
from tests.factories import record_items, resident
from tests.integration.conftest import Running
from tests.integration.consent_steps import patient_of, treat
from tests.integration.referral_steps import accepted, consortium

ATTACKS = [
    "DROP TRIGGER audit_log_no_change ON audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TABLE audit_log",
    "TRUNCATE audit_heads",
    "DELETE FROM audit_log",
    "UPDATE audit_tree SET size = 0",
    "INSERT INTO audit_nodes (level, idx, hash) VALUES (0, -1, '\\x00')",
    "ALTER FUNCTION audit_append_only() RENAME TO harmless",
    "DELETE FROM ledger_events",
    "TRUNCATE ledger_events",
    "DELETE FROM ledger_source_records",
    "SET session_replication_role = replica",
    "CREATE ROLE intruder SUPERUSER",
]


@pytest.mark.parametrize(
    "statement", ATTACKS, ids=[a.split(" ")[0] + "-" + str(i) for i, a in enumerate(ATTACKS)]
)
async def test_the_applications_own_credentials_cannot_touch_the_audit_or_the_ledger(
    exchange: Running, statement: str
) -> None:
    pool = exchange.rt.pool
    assert not await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(statement)


async def test_the_exchange_still_reads_audits_and_signs_as_the_application_role(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(601)
    await accepted(exchange, "county", record_items(rid, "lp-601", consent=True))
    await exchange.settle()
    pid = await patient_of(exchange, rid)
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert read.status_code == 200
    user = await exchange.rt.pool.fetchval("SELECT current_user")
    assert user.startswith("hie_app_")
    audited = await exchange.rt.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
        read.headers["x-request-id"],
    )
    assert audited == 1
    # The owner is not the application: its triggers still refuse even the owner's UPDATE.
    async with exchange.owner() as owner:
        assert await owner.fetchval("SELECT current_user") != user
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await owner.execute("UPDATE audit_log SET record_text = '{}' WHERE seq = 0")


async def test_a_role_the_dba_made_is_used_as_given(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    database = settings.database_url.rsplit("/", 1)[1]
    role = f"dba_{database}"[:63]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'dba-chosen-pw'")
    finally:
        await conn.close()
    host = settings.database_url.split("@", 1)[1]
    given = dataclasses.replace(
        settings, app_database_url=f"postgresql://{role}:dba-chosen-pw@{host}"
    )
    async with open_runtime(given, Endpoints(settings.database_url, settings.nats_url)) as rt:
        assert await rt.pool.fetchval("SELECT current_user") == role
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await rt.pool.execute("DROP TRIGGER audit_log_no_change ON audit_log")
        await rt.audit_writer.append({"action": "read", "decision": "permit"}, datetime.now(UTC))
