"""The audit append writes its rows before it takes the lock that orders the appends (audit
schema step 9): the next append's rows go in while the one before it commits, and an append
that is refused — the tree moved on, or another writer's append took its places first —
still writes nothing. Each test holds one append's transaction open on its own connection
and watches what a second connection's append waits on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from audit.merkle import SHA256, root
from audit.postgres import _APPEND_CALL, AuditStore, record_hash

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)
PATIENTS = ["7a0a3c52-8f3e-4c1b-9d55-0b7c1e2f4a01", "7a0a3c52-8f3e-4c1b-9d55-0b7c1e2f4a02"]


def _batch(tag: str, n: int) -> list[tuple[dict[str, Any], datetime]]:
    """``n`` records of one writer; each touches two patients (rows in audit_patients too)."""
    return [
        (
            {
                "action": "search",
                "decision": "permit",
                "person": f"{tag}-{i}",
                "patients": PATIENTS,
            },
            T0,
        )
        for i in range(n)
    ]


@contextlib.asynccontextmanager
async def _two_appends(
    pool: asyncpg.Pool, held: list[Any], then: list[Any]
) -> AsyncIterator[tuple[Any, asyncio.Task[Any], int]]:
    """``held``'s append called in a transaction left open, and ``then``'s called on another
    connection meanwhile: the open transaction, the second call, its backend's pid. Whatever
    the block does, the transaction ends and the second call with it."""
    conn, other = await pool.acquire(), await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    call: asyncio.Task[Any] | None = None
    try:
        assert await conn.fetchval(_APPEND_CALL, *held) is True
        call = asyncio.create_task(other.fetchval(_APPEND_CALL, *then))
        yield tx, call, other.get_server_pid()
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):  # ended by the block already
            await tx.rollback()
        if call is not None:
            await asyncio.gather(call, return_exceptions=True)
        await pool.release(other)
        await pool.release(conn)


async def _waiting_on(pool: asyncpg.Pool, pid: int) -> tuple[str | None, set[str]]:
    """What backend ``pid`` waits for (the lock's type), once it waits, and the audit tables
    it has written to (holds a row-exclusive lock on) meanwhile."""
    for _ in range(500):
        kind = await pool.fetchval(
            "SELECT locktype FROM pg_locks WHERE pid = $1 AND NOT granted LIMIT 1", pid
        )
        if kind is not None:
            break
        await asyncio.sleep(0.01)
    written = await pool.fetch(
        "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.pid = $1 AND l.granted AND l.mode = 'RowExclusiveLock' "
        "AND c.relname IN ('audit_log', 'audit_nodes', 'audit_patients')",
        pid,
    )
    return kind, {r["relname"] for r in written}


async def _log(pool: asyncpg.Pool) -> tuple[list[str], list[bytes], int]:
    rows = await pool.fetch("SELECT person, leaf_hash FROM audit_log ORDER BY seq")
    links = await pool.fetchval("SELECT count(*) FROM audit_patients")
    return [r["person"] for r in rows], [bytes(r["leaf_hash"]) for r in rows], links


async def _setup(pool: asyncpg.Pool) -> AuditStore:
    await record_hash(pool, "sha256")
    store = AuditStore(pool)
    await store.append_many(_batch("before", 5))
    return store


async def test_the_next_append_writes_its_rows_while_the_one_before_commits(
    stored_pool: asyncpg.Pool,
) -> None:
    """An append computed on one still uncommitted has its rows in and waits only for the
    ordering lock; once the first commits it lands after it, and the tree is the tree of
    every leaf."""
    store = await _setup(stored_pool)
    first, first_seqs, after = store._compute(_batch("a", 20), *await store._load_state())
    second, second_seqs, _ = store._compute(_batch("b", 20), *after)
    async with _two_appends(stored_pool, first, second) as (tx, call, pid):
        kind, written = await _waiting_on(stored_pool, pid)
        assert kind == "advisory"  # the ordering lock, not another append's rows
        assert written == {"audit_log", "audit_nodes", "audit_patients"}  # its rows are in
        await tx.commit()
        assert await asyncio.wait_for(call, 30) is True
    persons, leaves, links = await _log(stored_pool)
    assert persons[5:] == [f"a-{i}" for i in range(20)] + [f"b-{i}" for i in range(20)]
    assert first_seqs + second_seqs == list(range(5, 45)) and links == 2 * 45
    assert (await store.tree()).root == root(leaves, SHA256)


async def test_an_append_that_takes_the_places_of_one_uncommitted_waits_and_writes_nothing(
    stored_pool: asyncpg.Pool,
) -> None:
    """Two writers computed on the same tree: the second waits on the first's rows; when the
    first commits, the second is refused (false: compute again) and none of its rows, links
    or nodes are in the log."""
    store = await _setup(stored_pool)
    state = await store._load_state()
    first, _, _ = store._compute(_batch("a", 20), *state)
    rival, _, _ = AuditStore(stored_pool)._compute(_batch("r", 30), *state)
    nodes_before = await stored_pool.fetchval("SELECT count(*) FROM audit_nodes")
    async with _two_appends(stored_pool, first, rival) as (tx, call, pid):
        assert (await _waiting_on(stored_pool, pid))[0] == "transactionid"  # the first's rows
        await tx.commit()
        assert await asyncio.wait_for(call, 30) is False
    persons, leaves, links = await _log(stored_pool)
    assert persons[5:] == [f"a-{i}" for i in range(20)] and links == 2 * 25
    # 25 leaves: one node of level 4 (the first 16) stored, none of the rival's 35.
    assert await stored_pool.fetchval("SELECT count(*) FROM audit_nodes") == nodes_before + 1
    assert (await store.tree()).root == root(leaves, SHA256)


async def test_an_append_waiting_on_one_that_rolls_back_lands_in_its_place(
    stored_pool: asyncpg.Pool,
) -> None:
    store = await _setup(stored_pool)
    state = await store._load_state()
    first, _, _ = store._compute(_batch("a", 20), *state)
    rival, _, _ = AuditStore(stored_pool)._compute(_batch("r", 30), *state)
    async with _two_appends(stored_pool, first, rival) as (tx, call, pid):
        assert (await _waiting_on(stored_pool, pid))[0] == "transactionid"
        await tx.rollback()
        assert await asyncio.wait_for(call, 30) is True
    persons, leaves, links = await _log(stored_pool)
    assert persons[5:] == [f"r-{i}" for i in range(30)] and links == 2 * 35
    assert (await store.tree()).root == root(leaves, SHA256)
