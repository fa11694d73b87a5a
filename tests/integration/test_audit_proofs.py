"""Inclusion and consistency proofs from the stored log, checked against the tree computed
from every leaf: the store keeps only the nodes from ``STORED_FROM`` up and computes the lower
ones from leaf hashes, and a log written when every level was stored answers the same."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from audit.merkle import SHA256, SM3, Hasher, root, verify_consistency, verify_inclusion
from audit.postgres import STORED_FROM, AuditStore, record_hash

T0 = datetime(2026, 12, 7, 8, tzinfo=UTC)
# Uneven batches, so that flushes end inside and on the edges of the lower levels' nodes.
BATCHES = (1, 2, 3, 5, 8, 13, 21, 34, 55, 1, 16, 32, 7, 100)


async def _fill(store: AuditStore) -> int:
    n = 0
    for size in BATCHES:
        batch = [
            ({"action": "read", "decision": "permit", "person": f"doctor-{n + i}"}, T0)
            for i in range(size)
        ]
        await store.append_many(batch)
        n += size
    return n


async def _leaves(pool: asyncpg.Pool) -> list[bytes]:
    rows = await pool.fetch("SELECT leaf_hash FROM audit_log ORDER BY seq")
    return [bytes(r["leaf_hash"]) for r in rows]


async def _check_every_proof(store: AuditStore, leaves: list[bytes], hasher: Hasher) -> int:
    checked = 0
    sizes = sorted(
        {1, 2, 3, 15, 16, 17, 31, 64, 100, 255, 256, len(leaves)} & set(range(1, len(leaves) + 1))
    )
    roots = {size: root(leaves[:size], hasher) for size in range(1, len(leaves) + 1)}
    for size in sizes:
        for seq in range(size):
            leaf, path = await store.inclusion(seq, size)
            assert leaf == leaves[seq]
            assert verify_inclusion(hasher, seq, size, leaf, path, roots[size]), (seq, size)
            checked += 1
    for second in sizes:
        for first in range(1, second):
            proof = await store.consistency(first, second)
            assert verify_consistency(hasher, first, second, proof, roots[first], roots[second]), (
                first,
                second,
            )
            checked += 1
    return checked


@pytest.mark.parametrize("hasher", [SHA256, SM3], ids=["sha256", "sm3"])
async def test_every_proof_checks_against_the_tree_of_every_leaf(
    stored_pool: asyncpg.Pool, hasher: Hasher
) -> None:
    await record_hash(stored_pool, hasher.name)
    store = AuditStore(stored_pool)
    size = await _fill(store)
    leaves = await _leaves(stored_pool)
    assert len(leaves) == size == sum(BATCHES)
    # Only the nodes from STORED_FROM up are written: one per 2**STORED_FROM records and
    # fewer above, where every level would have made size - 1 of them.
    levels = await stored_pool.fetch("SELECT level, count(*) AS n FROM audit_nodes GROUP BY level")
    stored = {r["level"]: r["n"] for r in levels}
    assert min(stored) == STORED_FROM
    assert stored == {level: size >> level for level in range(STORED_FROM, size.bit_length())}
    assert await _check_every_proof(store, leaves, hasher) > 1000
    # A wrong leaf hash under a computed node makes the proofs that use it fail: record 0's
    # path holds the node over records 4-7, computed from their leaf hashes.
    async with stored_pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")  # past the triggers
        await conn.execute("UPDATE audit_log SET leaf_hash = $1 WHERE seq = 5", bytes(32))
    _, path = await store.inclusion(0, size)
    assert path[2] != root(leaves[4:8], hasher)
    assert not verify_inclusion(hasher, 0, size, leaves[0], path, root(leaves, hasher))


async def test_a_log_written_with_every_node_answers_the_same(stored_pool: asyncpg.Pool) -> None:
    """Nodes below STORED_FROM that an earlier version stored are still there and unread: a
    wrong one among them changes no proof."""
    await record_hash(stored_pool, "sha256")
    store = AuditStore(stored_pool)
    size = await _fill(store)
    leaves = await _leaves(stored_pool)
    async with stored_pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "INSERT INTO audit_nodes (level, idx, hash) SELECT level, idx, $1 FROM "
            "generate_series(1, $2::int - 1) level, generate_series(0, $3::bigint) idx "
            "WHERE idx < $3::bigint >> level",
            bytes(32),
            STORED_FROM,
            size,
        )
    assert await _check_every_proof(store, leaves, SHA256) > 1000
