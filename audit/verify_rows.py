"""Reading the audit log's rows for verification, in ranges side by side.

A log of a million records is ~700 MB of record text and three hashes per record (SHA-256, or
SM3 under the gm crypto profile: the hash the log records in ``audit_tree.hash``, never
another): one process cannot read and hash it in a few seconds. The verifier exports its snapshot and
splits the leaves into chunk-aligned ranges; each range is read and checked by its own worker
process (``python -m audit.verify_rows``) on its own connection, in that same snapshot, so
every worker sees the very rows the others see. While a worker hashes one chunk of rows, the
server already sends the next. Small logs, or a caller without the database's URL, are
checked in this process, range by range, the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from audit.merkle import Hasher, hasher_named
from audit.postgres import GENESIS, log_hasher
from audit.verify import Finding, Report, Span, combine, verify_span

CHUNK = 1 << 13  # leaves hashed and built into a subtree at a time: a power of two
WORKERS = 2
_LOW, _HIGH = -(1 << 63), (1 << 63) - 1
_ROWS = (
    "SELECT seq, record_text, leaf_hash, chain_hash FROM audit_log "
    "WHERE seq >= $1 AND seq < $2 ORDER BY seq LIMIT $3"
)


async def verify_range(
    conn: asyncpg.Connection,
    lo: int,
    hi: int | None,
    sizes: Sequence[int],
    chunk: int,
    hasher: Hasher,
) -> Span:
    """Check the rows with ``lo <= seq < hi`` (any seq below ``hi`` when ``lo`` is 0, any
    above ``lo`` when ``hi`` is None), a chunk of rows per query."""
    previous = GENESIS
    if lo:
        previous = await conn.fetchval("SELECT chain_hash FROM audit_log WHERE seq = $1", lo - 1)
        previous = previous or b""  # missing: the range before says so first
    statement = await conn.prepare(_ROWS)
    total = Span(lo)
    sizes = [s for s in sizes if s > lo and (hi is None or s <= hi)]
    end = _HIGH if hi is None else hi

    async def fetch(after: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await statement.fetch(after, end, chunk)
        return rows

    # While one chunk is hashed, the server already sends the next one into the socket.
    pending = asyncio.ensure_future(fetch(_LOW if lo == 0 else lo))
    while True:
        rows = await pending
        more = len(rows) == chunk
        if more:
            pending = asyncio.ensure_future(fetch(rows[-1][0] + 1))
            await asyncio.sleep(0)  # let it send the query
        span = verify_span(rows, total.start + total.passed, previous, sizes, chunk, hasher)
        if total.first is None:
            total.first = span.first
        total.passed += span.passed
        total.roots += span.roots
        total.edges.update(span.edges)
        if span.finding is not None or not more:
            if more:
                await pending  # the connection is free again before it is handed back
            total.finding = span.finding
            return total
        previous = rows[-1][3]


def _to_json(span: Span) -> dict[str, Any]:
    finding = span.finding
    return {
        "start": span.start,
        "passed": span.passed,
        "first": span.first,
        "finding": None if finding is None else [finding.code, finding.message, finding.seq],
        "roots": [r.hex() for r in span.roots],
        "edges": {str(k): [h.hex() for h in v] for k, v in span.edges.items()},
    }


def _from_json(data: dict[str, Any]) -> Span:
    finding = data["finding"]
    return Span(
        data["start"],
        data["passed"],
        data["first"],
        None if finding is None else Finding(*finding),
        [bytes.fromhex(r) for r in data["roots"]],
        {int(k): [bytes.fromhex(h) for h in v] for k, v in data["edges"].items()},
    )


async def _in_worker(
    url: str,
    snapshot: str,
    lo: int,
    hi: int | None,
    sizes: Sequence[int],
    chunk: int,
    hasher: Hasher,
) -> Span:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit.verify_rows",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    job = {
        "url": url,
        "snapshot": snapshot,
        "lo": lo,
        "hi": hi,
        "sizes": list(sizes),
        "hash": hasher.name,
    }
    out, _ = await proc.communicate(json.dumps({**job, "chunk": chunk}).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"an audit verification worker exited with code {proc.returncode}")
    return _from_json(json.loads(out))


async def verify_rows(
    conn: asyncpg.Connection,
    heads: dict[int, bytes],
    url: str | None = None,
    *,
    workers: int = WORKERS,
    chunk: int = CHUNK,
    expected_hash: str | None = None,
) -> Report:
    """Verify every row of the log against ``heads`` (size -> root, signatures checked),
    with the hash the log records (which must be ``expected_hash`` when that is given:
    else ``HashError``, ``audit.hash_mismatch``). ``conn`` must be in a REPEATABLE READ
    transaction; with ``url`` and more than a chunk per worker, ``workers`` processes share
    the rows."""
    tree = await conn.fetchrow("SELECT size, hash FROM audit_tree WHERE id = 1")
    tree_size = tree["size"]
    hasher = log_hasher(tree["hash"], tree_size, expected_hash)
    last = await conn.fetchval("SELECT max(seq) FROM audit_log")
    leaves = max(tree_size, -1 if last is None else last + 1)
    per = -(-leaves // (workers * chunk)) * chunk  # whole chunks per worker
    sizes = sorted(heads)
    if url is None or workers < 2 or per <= chunk:
        span = await verify_range(conn, 0, None, sizes, chunk, hasher)
        return combine([span], heads, tree_size, chunk, hasher)
    snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
    bounds = [i * per for i in range(workers)]
    spans = await asyncio.gather(
        *(
            _in_worker(
                url, snapshot, lo, bounds[i + 1] if i + 1 < workers else None, sizes, chunk, hasher
            )
            for i, lo in enumerate(bounds)
        )
    )
    return combine(spans, heads, tree_size, chunk, hasher)


async def _work() -> None:
    job = json.loads(sys.stdin.buffer.read())
    conn = await asyncpg.connect(job["url"])
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{job['snapshot']}'")
            span = await verify_range(
                conn,
                job["lo"],
                job["hi"],
                job["sizes"],
                job["chunk"],
                hasher_named(job["hash"]),
            )
    finally:
        await conn.close()
    sys.stdout.write(json.dumps(_to_json(span)))


if __name__ == "__main__":
    try:  # the exchange's loop where it is installed: asyncpg's reads cost less on it
        import uvloop
    except ImportError:
        asyncio.run(_work())
    else:
        uvloop.run(_work())
