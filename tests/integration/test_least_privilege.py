"""Issue: the application connected to PostgreSQL as a superuser, so its own credentials could
drop the audit log's append-only triggers. Now it runs as an application role that only reads
the audit tables (records are appended through the owner's function) and can neither alter,
truncate nor drop them or their triggers, nor delete from the ledger; the owner role
(HIE_DATABASE_URL's user) makes the schemas and the role. And the read models keep names and
identifiers sealed, or as keyed hashes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from domain.identity import RESIDENT_ID_SYSTEM
from exchange.bootstrap import Endpoints, open_runtime
from exchange.settings import Settings
from projections.tables import TABLES as PROJECTION_TABLES
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
    "DELETE FROM revoked_tokens",
    "DELETE FROM break_glass_grants",
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


async def test_the_read_models_hold_no_name_or_identifier_in_the_clear(exchange: Running) -> None:
    await consortium(exchange)
    rid, guardian = resident(611), resident(612)
    items = record_items(rid, "pii-611", consent=True)  # a name, an MRN, a resident ID
    items.append(
        {
            "source_id": "pii-guardian",
            "kind": "guardian",
            "payload": {
                "patient": {"resident_id": rid},
                "guardian": {"resident_id": guardian},
                "relationship": "parent",
                "valid_from": "2026-01-01T00:00:00+08:00",
            },
        }
    )
    await accepted(exchange, "county", items)
    await exchange.settle()
    pool = exchange.rt.pool
    for table in PROJECTION_TABLES:
        text = " ".join(r[0] for r in await pool.fetch(f"SELECT t::text FROM {table} t"))
        for secret in (rid, guardian, "李建国", "pii-611-MRN"):
            assert secret not in text, table
    # ... and the exchange still finds the patient by them and shows them to a permitted read.
    pid = await patient_of(exchange, rid)
    assert str(await exchange.rt.records.find_patient(RESIDENT_ID_SYSTEM, rid)) == pid
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
    assert rid in read.text and "李建国" in read.text
