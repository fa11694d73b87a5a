"""The audit log records the hash it is made with, and nothing mixes them up: an empty log takes
the profile's hash when the exchange prepares it; a store, a verifier, the database's append
function and an exchange of the other profile each refuse it by name; the recorded hash never
changes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
import pytest

from audit.merkle import SHA256, SM3, HashError
from audit.postgres import AuditStore, AuditWriteError, record_hash
from cryptoprofile import GM, INTL
from exchange.bootstrap import Endpoints, open_runtime
from exchange.servers.audit_heads import HeadSigner, verify_log
from exchange.settings import Settings

T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
RECORD = {"action": "read", "decision": "permit", "person": "doctor-1"}


async def test_an_empty_log_takes_the_profiles_hash_and_refuses_the_other(
    stored_pool: asyncpg.Pool,
) -> None:
    # Nothing recorded yet: a store that was not told the profile will not guess SHA-256.
    with pytest.raises(AuditWriteError) as err:
        await AuditStore(stored_pool).append(RECORD, T0)
    assert err.value.code == "audit.hash_unknown"
    await record_hash(stored_pool, "sm3")
    assert await stored_pool.fetchval("SELECT hash FROM audit_tree") == "sm3"
    # From now on the log says what it is: any store hashes with SM3 ...
    store = AuditStore(stored_pool)
    await store.append(RECORD, T0)
    assert await store.hasher() is SM3
    leaf = await stored_pool.fetchval("SELECT leaf_hash FROM audit_log WHERE seq = 0")
    text = await stored_pool.fetchval("SELECT record_text FROM audit_log WHERE seq = 0")
    assert bytes(leaf) == SM3.leaf_hash(text.encode()) != SHA256.leaf_hash(text.encode())
    # ... one of the other profile is refused by name, before it writes anything ...
    with pytest.raises(AuditWriteError) as err:
        await AuditStore(stored_pool, INTL).append(RECORD, T0)
    assert err.value.code == "audit.hash_mismatch" and "sm3" in str(err.value)
    with pytest.raises(HashError):
        await AuditStore(stored_pool, INTL).tree()
    with pytest.raises(HashError) as hash_err:
        await record_hash(stored_pool, "sha256")  # an intl exchange starting on it
    assert hash_err.value.code == "audit.hash_mismatch"
    # ... and the verifier of the other profile says so rather than report bad records.
    report = await verify_log(stored_pool, HeadSigner("t", bytes(32), INTL))
    assert [f.code for f in report.findings] == ["audit.hash_mismatch"]
    signer = HeadSigner("t", bytes(32), GM)
    assert await store.record_head(signer.note, T0)
    report = await verify_log(stored_pool, signer)
    assert report.ok and (report.records, report.heads_checked) == (1, 1)
    assert await stored_pool.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_the_database_refuses_an_append_made_with_another_hash(
    stored_pool: asyncpg.Pool,
) -> None:
    await record_hash(stored_pool, "sha256")
    store = AuditStore(stored_pool, INTL)
    await store.append(RECORD, T0)
    # A writer that hashed with SM3 (as if its process had been told gm) gets past no check of
    # its own here: the database itself refuses it and writes nothing.
    frontier, chain, _ = await store._load_state()
    args, _, _ = store._compute([(RECORD, T0)], frontier, chain, SM3)
    with pytest.raises(asyncpg.PostgresError) as err:
        await stored_pool.fetchval(
            "SELECT audit_append(" + ", ".join(f"${n}" for n in range(1, 23)) + ")", *args
        )
    assert err.value.sqlstate == "HA001"
    assert await stored_pool.fetchval("SELECT size FROM audit_tree") == 1
    # And the recorded hash is never changed, even by the tables' owner.
    with pytest.raises(asyncpg.RaiseError, match="never changes"):
        await stored_pool.execute("UPDATE audit_tree SET hash = 'sm3'")


@pytest.mark.parametrize("crypto_profile", ["intl"])
async def test_an_exchange_of_the_other_profile_does_not_start_on_the_log(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url and settings.crypto_profile == "intl"
    ends = Endpoints(settings.database_url, settings.nats_url)
    async with open_runtime(settings, ends) as rt:
        await rt.audit_writer.append(RECORD, T0)
    gm = dataclasses.replace(settings, crypto_profile="gm")
    with pytest.raises(HashError) as err:
        async with open_runtime(gm, ends):
            pytest.fail("a gm exchange started on an intl audit log")
    assert err.value.code == "audit.hash_mismatch"
