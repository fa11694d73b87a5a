"""Versioned migrations on the real PostgreSQL: a database made by the code before versions is
adopted and loses nothing; the migrated schema is the one a fresh database gets; a second run
does nothing; a database newer than the code, or one whose recorded step differs, is refused;
two migrators starting at once apply each step once."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from audit.frontier import Frontier
from audit.merkle import SHA256
from audit.postgres import AuditStore
from cryptoprofile import INTL
from exchange.bootstrap import Endpoints, open_runtime
from exchange.database import STORED_TABLES, migrate_stored_tables
from exchange.servers.audit_heads import HeadSigner, verify_log
from exchange.servers.migrations import (
    Applied,
    Component,
    SchemaChanged,
    SchemaTooNew,
    checksum,
    migrate,
)
from exchange.settings import Settings

T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)

# The stored tables as the code at commit 6509793 made them (before versions), copied from
# `git show 6509793:audit/postgres.py` (SCHEMA, _triggers() written out, _APPEND_FUNCTION),
# `…:consent/postgres.py` and `…:exchange/revocations.py`, in the order it ran them.
PREVIOUS_SCHEMA = r"""
CREATE TABLE IF NOT EXISTS audit_log (
    seq bigint PRIMARY KEY, recorded_at timestamptz NOT NULL, patient_id uuid, person text,
    institution text, action text NOT NULL, decision text, purpose text,
    break_glass boolean NOT NULL DEFAULT false, record_text text NOT NULL,
    leaf_hash bytea NOT NULL, chain_hash bytea NOT NULL);
ALTER TABLE audit_log ALTER COLUMN record_text SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient_id, seq);
CREATE INDEX IF NOT EXISTS audit_log_person ON audit_log (person, recorded_at);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (recorded_at);
CREATE TABLE IF NOT EXISTS audit_nodes (
    level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS audit_tree (
    id int PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, frontier bytea[] NOT NULL,
    chain_head bytea NOT NULL);
INSERT INTO audit_tree VALUES (1, 0, '{}', '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_heads (
    size bigint PRIMARY KEY, root bytea NOT NULL, note text NOT NULL,
    signed_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_nodes_no_change ON audit_nodes;
CREATE TRIGGER audit_nodes_no_change BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_nodes_no_truncate ON audit_nodes;
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_heads_no_change ON audit_heads;
CREATE TRIGGER audit_heads_no_change BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads;
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE FUNCTION audit_append(
    expected bigint, seqs bigint[], ats timestamptz[], patients uuid[], persons text[],
    institutions text[], actions text[], decisions text[], purposes text[], glass boolean[],
    texts text[], leaves bytea[], chains bytea[], levels smallint[], idxs bigint[],
    hashes bytea[], new_size bigint, new_frontier bytea[], new_chain bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('hie-audit-append'));
    IF (SELECT size FROM audit_tree WHERE id = 1 FOR UPDATE) <> expected THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (seq, recorded_at, patient_id, person, institution, action,
                           decision, purpose, break_glass, record_text, leaf_hash, chain_hash)
        SELECT * FROM unnest(seqs, ats, patients, persons, institutions, actions, decisions,
                             purposes, glass, texts, leaves, chains);
    INSERT INTO audit_nodes (level, idx, hash) SELECT * FROM unnest(levels, idxs, hashes);
    UPDATE audit_tree SET size = new_size, frontier = new_frontier, chain_head = new_chain
        WHERE id = 1;
    RETURN true;
END $$;

CREATE TABLE IF NOT EXISTS break_glass_grants (
    grant_id uuid PRIMARY KEY, person text NOT NULL, institution text NOT NULL,
    patient_id uuid NOT NULL, reason_code text NOT NULL, reason text NOT NULL,
    granted_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS break_glass_grants_patient ON break_glass_grants (patient_id, person);

CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id text PRIMARY KEY, revoked_at timestamptz NOT NULL, reason text);
CREATE INDEX IF NOT EXISTS revoked_tokens_at ON revoked_tokens (revoked_at);
CREATE TABLE IF NOT EXISTS revoked_persons (person text PRIMARY KEY, before timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS revoked_persons_before ON revoked_persons (before);
"""
TABLES = (
    "audit_log",
    "audit_nodes",
    "audit_tree",
    "audit_heads",
    "break_glass_grants",
    "revoked_tokens",
    "revoked_persons",
)


@pytest.fixture
def other_database_url(servers: tuple[str, str]) -> Iterator[str]:
    base = servers[0].rsplit("/", 1)[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def rows(pool: asyncpg.Pool) -> dict[str, list[str]]:
    """Every row of every stored table, as PostgreSQL writes it, in a stable order."""
    return {
        t: [r[0] for r in await pool.fetch(f"SELECT x::text FROM {t} x ORDER BY x::text")]
        for t in TABLES
    }


async def catalog(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    """The schema of the stored tables as the catalog describes it (comments aside)."""
    tables = list(TABLES)
    return {
        "columns": [
            tuple(r)
            for r in await pool.fetch(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                "a.attstorage, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_attrdef d "
                "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
                tables,
            )
        ],
        "indexes": [
            r[0]
            for r in await pool.fetch(
                "SELECT indexdef FROM pg_indexes WHERE tablename = ANY($1) ORDER BY 1", tables
            )
        ],
        "constraints": [
            tuple(r)
            for r in await pool.fetch(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid::regclass::text = ANY($1) ORDER BY 1, 2",
                tables,
            )
        ],
        "triggers": [
            r[0]
            for r in await pool.fetch(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
            )
        ],
        "functions": [
            r[0]
            for r in await pool.fetch(
                "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
            )
        ],
    }


def _but_append(described: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The catalog less what the later steps changed: the append function (audit steps 3, 4,
    6 and 7), the table of a record's several patients (audit step 4), the log's recorded hash
    and the trigger that keeps it (audit step 7) and the index of a person's break-glass
    grants (consent step 2)."""
    return {
        **described,
        "columns": [c for c in described["columns"] if c[:2] != ("audit_tree", "hash")],
        "constraints": [c for c in described["constraints"] if "hash" not in c[1]],
        "indexes": [i for i in described["indexes"] if "break_glass_grants_person" not in i],
        "functions": [
            f
            for f in described["functions"]
            if "audit_append(" not in f and "audit_hash_fixed(" not in f
        ],
        "triggers": [
            t
            for t in described["triggers"]
            if " ON public.audit_patients " not in t and "audit_tree_hash_fixed" not in t
        ],
    }


async def previous_append(pool: asyncpg.Pool, batch: list[tuple[dict[str, Any], datetime]]) -> None:
    """An append as the previous code made it: the same rows, through its function (which
    took no list of a record's several patients)."""
    store = AuditStore(pool)
    # The previous code's tables record no hash (audit step 7 adds it): SHA-256, as it was.
    tree = await pool.fetchrow("SELECT size, frontier, chain_head FROM audit_tree WHERE id = 1")
    frontier = Frontier(tree["size"], [bytes(h) for h in tree["frontier"]])
    args, seqs, _ = store._compute(batch, frontier, bytes(tree["chain_head"]), SHA256)
    assert args[18:20] == [[], []]  # none of these records lists several patients

    def hashes(packed: bytes) -> list[bytes]:
        return [packed[i : i + 32] for i in range(0, len(packed), 32)]

    # This code packs the texts and hashes (audit step 6); the previous one sent lists.
    texts, leaves, chains, nodes = args[9].split("\n"), args[10], args[11], args[14]
    previous = [args[0], seqs, *args[1:9], texts, hashes(leaves), hashes(chains), *args[12:14]]
    previous += [hashes(nodes), *args[15:18]]
    await pool.fetchval(
        "SELECT audit_append(" + ", ".join(f"${n}" for n in range(1, 20)) + ")", *previous
    )


async def previous_head(pool: asyncpg.Pool, signer: HeadSigner, at: datetime) -> None:
    """A head signed as the previous code signed it (its tables record no hash)."""
    tree = await pool.fetchrow("SELECT size, frontier FROM audit_tree WHERE id = 1")
    root = Frontier(tree["size"], [bytes(h) for h in tree["frontier"]]).root(SHA256)
    note = signer.note(tree["size"], root)
    await pool.execute(
        "INSERT INTO audit_heads VALUES ($1, $2, $3, $4)", tree["size"], root, note, at
    )


async def fill_previous(pool: asyncpg.Pool, signer: HeadSigner) -> None:
    """What the previous code left: audited reads with two signed heads, a revoked token, a
    person cut off, a break-glass grant."""
    for batch, size in enumerate((5, 1, 7)):
        await previous_append(
            pool,
            [
                (
                    {
                        "action": "read",
                        "decision": "permit" if n % 3 else "deny",
                        "person": f"doctor-{n % 4}",
                        "institution": "thc",
                        "purpose": "TREAT",
                        "patient_id": str(uuid.uuid4()),
                        "reasons": [],
                        "break_glass": n == 2,
                    },
                    T0 + timedelta(minutes=10 * batch, seconds=n),
                )
                for n in range(size)
            ],
        )
        if batch != 1:  # heads at sizes 5 and 13
            await previous_head(pool, signer, T0 + timedelta(minutes=10 * batch + 5))
    await pool.execute("INSERT INTO revoked_tokens VALUES ($1, $2, $3)", "tok-1", T0, "lost phone")
    await pool.execute("INSERT INTO revoked_persons VALUES ($1, $2)", "doctor-9", T0)
    await pool.execute(
        "INSERT INTO break_glass_grants VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        "doctor-1",
        "thc",
        uuid.uuid4(),
        "ETREAT",
        "unconscious on arrival",
        T0,
        T0 + timedelta(hours=4),
    )


async def test_a_database_made_before_versions_is_adopted_and_loses_nothing(
    pool: asyncpg.Pool,
) -> None:
    # Pinned to intl whatever profile the tests run under: the previous code knew only SHA-256
    # and Ed25519, so a database it made is an intl exchange's.
    signer = HeadSigner("t", secrets.token_bytes(32), INTL)
    # The previous code made its tables and used them. (This code's verifier reads the hash the
    # log records, which audit step 7 adds: it runs once the migrations have.)
    await pool.execute(PREVIOUS_SCHEMA)
    await fill_previous(pool, signer)
    before = await rows(pool)

    # The new code starts: each component's baseline is adopted, the audit comments applied.
    applied = await migrate_stored_tables(pool)
    assert [(a.component, a.version, a.adopted) for a in applied] == [
        ("audit", 1, True),
        ("audit", 2, False),
        ("audit", 3, False),
        ("audit", 4, False),
        ("audit", 5, False),
        ("audit", 6, False),
        ("audit", 7, False),
        ("audit", 8, False),
        ("audit", 9, False),
        ("consent", 1, True),
        ("consent", 2, False),
        ("consent", 3, False),
        ("revocations", 1, True),
    ]

    # Nothing was lost: the same rows (audit_tree now saying the log is SHA-256's, as it is),
    # and `hie audit verify`'s checks of the log pass.
    after = await rows(pool)
    assert after["audit_tree"] == [r.replace(")", ",sha256)") for r in before["audit_tree"]]
    assert {**after, "audit_tree": []} == {**before, "audit_tree": []}
    report = await verify_log(pool, signer)
    assert report.ok and report.records == 13 and report.heads_checked == 2

    # The log still works and stays append-only.
    store = AuditStore(pool)
    await store.append({"action": "read", "decision": "permit", "person": "doctor-1"}, T0)
    assert await store.record_head(signer.note, T0 + timedelta(hours=1))
    assert (await verify_log(pool, signer)).heads_checked == 3
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE audit_log SET person = 'someone' WHERE seq = 0")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("TRUNCATE audit_heads")

    # A second run is a no-op: nothing applied, the version records untouched.
    versions = await pool.fetch("SELECT * FROM schema_versions ORDER BY component, version")
    assert await migrate_stored_tables(pool) == []
    assert await pool.fetch("SELECT * FROM schema_versions ORDER BY component, version") == versions
    assert [(r["component"], r["version"], r["checksum"]) for r in versions] == [
        (c.name, s.version, s.checksum) for c in STORED_TABLES for s in c.steps
    ]


async def test_an_adopted_database_has_the_schema_a_fresh_one_gets(
    pool: asyncpg.Pool, other_database_url: str
) -> None:
    # One database made by the previous code, then migrated; one made by the migrations alone.
    await pool.execute(PREVIOUS_SCHEMA)
    previous = await catalog(pool)
    assert len(previous["triggers"]) == 6 and len(previous["functions"]) == 2
    assert ("audit_log", "record_text", "text", True, b"e", None) in previous["columns"]
    await migrate_stored_tables(pool)
    fresh = await asyncpg.create_pool(other_database_url, min_size=1, max_size=2)
    try:
        applied = await migrate_stored_tables(fresh)
        assert not any(a.adopted for a in applied)
        # Version 1 is exactly the previous schema and adoption changed none of it; the later
        # steps changed only the append function (step 3: it checks the chain head too; step
        # 4: it indexes a record's several patients) and added that index's table.
        migrated = await catalog(fresh)
        assert await catalog(pool) == migrated
        assert _but_append(migrated) == _but_append(previous)
        [append] = [f for f in migrated["functions"] if "audit_append(" in f]
        assert "head <> previous_chain" in append and "USING ERRCODE = 'HA001'" in append
        assert "INSERT INTO audit_patients" in append
        assert len([t for t in migrated["triggers"] if "audit_patients" in t]) == 2
        assert await rows(fresh) == await rows(pool)  # audit_tree's one empty-tree row
    finally:
        await fresh.close()


async def test_a_database_newer_than_the_code_is_refused_before_anything_changes(
    pool: asyncpg.Pool,
) -> None:
    await migrate_stored_tables(pool)
    # A newer release migrated the consent tables further; this code's last audit step is
    # pretend-pending, so a refusal that came after applying it would show.
    ours = await pool.fetchval(
        "SELECT max(version) FROM schema_versions WHERE component = 'consent'"
    )
    await pool.execute(
        "INSERT INTO schema_versions (component, version, name, checksum) "
        "VALUES ('consent', $1, 'from a newer release', 'feed')",
        ours + 1,
    )
    last = await pool.fetchval("SELECT max(version) FROM schema_versions WHERE component = 'audit'")
    await pool.execute(
        "DELETE FROM schema_versions WHERE component = 'audit' AND version = $1", last
    )
    with pytest.raises(SchemaTooNew) as refused:
        await migrate_stored_tables(pool)
    assert refused.value.code == "schema.too_new"
    assert f"'consent' schema is at version {ours + 1}" in refused.value.message
    assert f"(version {ours})" in refused.value.message
    assert not await pool.fetchval(
        "SELECT count(*) FROM schema_versions WHERE component = 'audit' AND version = $1", last
    )


async def test_a_refused_database_stops_the_exchange_starting(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        await migrate_stored_tables(pool)
        await pool.execute(
            "INSERT INTO schema_versions (component, version, name, checksum) "
            "VALUES ('revocations', 7, 'from a newer release', 'feed')"
        )
    finally:
        await pool.close()
    with pytest.raises(SchemaTooNew, match="'revocations' schema is at version 7"):
        async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)):
            pytest.fail("the exchange started on a database newer than its code")


async def test_a_recorded_step_with_another_checksum_is_refused(pool: asyncpg.Pool) -> None:
    await migrate_stored_tables(pool)
    # Someone edited the released revocations baseline and a database ran the edited one.
    await pool.execute(
        "UPDATE schema_versions SET checksum = $1 WHERE component = 'revocations' AND version = 1",
        checksum("CREATE TABLE edited ()"),
    )
    with pytest.raises(SchemaChanged) as refused:
        await migrate_stored_tables(pool)
    assert refused.value.code == "schema.checksum_mismatch"
    assert "'revocations' schema version 1" in refused.value.message


async def test_two_migrators_at_once_apply_each_step_once(
    database_url: str, pool: asyncpg.Pool
) -> None:
    # A component whose step takes a while and counts its runs, beside the real ones.
    slow = Component.of(
        "slow",
        [
            ("count runs", "CREATE TABLE runs (at timestamptz DEFAULT clock_timestamp())"),
            ("take a while", "SELECT pg_sleep(0.5); INSERT INTO runs DEFAULT VALUES"),
        ],
        ["runs"],
    )
    components = [*STORED_TABLES, slow]
    other = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        # Two processes start at the same moment against an empty database.
        first, second = await asyncio.gather(migrate(pool, components), migrate(other, components))
    finally:
        await other.close()
    # One applied every step; the other waited for it and found nothing left.
    results: list[list[Applied]] = sorted([first, second], key=len)
    assert results[0] == []
    assert [(a.component, a.version) for a in results[1]] == [
        (c.name, s.version) for c in components for s in c.steps
    ]
    assert await pool.fetchval("SELECT count(*) FROM runs") == 1
    assert await pool.fetchval("SELECT count(*) FROM schema_versions") == sum(
        c.version for c in components
    )
