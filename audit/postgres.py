"""The audit log's PostgreSQL store: an RFC 9162 Merkle log over append-only rows.

Each record is one leaf (H(0x00 || its canonical JSON)); each row also carries a hash chain link
(H(previous link || canonical JSON)) so that a verifier can name the first bad row, whatever was
done to it. H is the log's hash, recorded in the log (``audit_tree.hash``, ``audit.schema``
step 7): SHA-256 under the intl crypto profile, SM3 under gm. A store learns it from the log;
one given a profile also refuses a log of the other's hash (``audit.hash_mismatch``), and a
log with no hash recorded yet takes its profile's. Appends
are group-committed: many records, one transaction, one WAL flush. The store keeps every
complete tree node from level ``STORED_FROM`` up (``audit_nodes``), so that inclusion and
consistency proofs are a few lookups (the lower ones are computed from at most a few
aligned leaf hashes), and the tree's right edge (``audit_tree``) so the root at the current
size is O(log n).
Triggers refuse UPDATE, DELETE and TRUNCATE on the log, its nodes and its signed heads. The
tables are made by the versioned steps of ``audit.schema`` (run by exchange.servers.migrations).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import orjson

from audit.frontier import Frontier, fold, perfect_pieces
from audit.merkle import (
    Hasher,
    HashError,
    consistency_proof,
    hasher_named,
    inclusion_proof,
    root,
    verify_consistency,
)
from audit.search import Query
from domain.errors import AuditError

if TYPE_CHECKING:
    from cryptoprofile import Profile

GENESIS = b"\x00" * 32
# The lowest level of tree node an append stores. The levels below hold seven nodes of every
# eight (one per record in all): a row and an index entry each, written inside the lock that
# orders the appends. A proof computes such a node from the leaf hashes under it (at most
# 2**STORED_FROM - 1 for one proof's lower pieces, one aligned range of the log). A log
# written before keeps its lower nodes; nothing reads them.
STORED_FROM = 4


def canonical_text(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(record: dict[str, Any]) -> bytes:
    """The record's canonical JSON in UTF-8, as the log stores and hashes it, by orjson (a
    fifth of ``canonical_text``'s time): byte for byte ``canonical_text`` for str keys, str,
    int, bool, None, lists and dicts (tests/unit/test_audit_canonical.py); a float takes
    orjson's shortest form (1e16 where json writes 1e+16: the log hashes the text it stores,
    nothing writes it again). What orjson refuses goes through ``canonical_text``."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an int beyond 64 bits, a key that is not a str, ...
        return canonical_text(record).encode()


def _patient_ids(values: list[Any]) -> list[UUID]:
    """The patient ids a record lists, each once; anything else in the list is left out of
    the index (the record itself keeps it, hashed like the rest)."""
    out: dict[UUID, None] = {}
    for value in values:
        try:
            out[UUID(str(value))] = None
        except ValueError:
            continue
    return list(out)


def chain_link(previous: bytes, text: str, hasher: Hasher) -> bytes:
    return hasher.digest(previous + text.encode())


_APPEND_CALL = "SELECT audit_append(" + ", ".join(f"${n}" for n in range(1, 23)) + ")"
# What audit_append raises when the append's hash is not the log's (audit.schema step 7).
_HASH_REFUSED = "HA001"


class AuditWriteError(AuditError):
    code = "audit.write_failed"


class AuditIntegrityError(AuditError):
    """The stored tree does not extend the last signed head: the exchange will not sign."""

    code = "audit.inconsistent"


@dataclass(frozen=True)
class TreeState:
    size: int
    root: bytes


def log_hasher(recorded: str | None, size: int, expected: str | None) -> Hasher:
    """The hasher of a log that records ``recorded`` (None: nothing yet) and holds ``size``
    records, for a store that expects ``expected`` (its profile's hash; None: any)."""
    if recorded is None:
        if size:  # audit.schema step 7 recorded sha256 for every log that held records
            raise HashError(
                f"the audit log holds {size} records and records no hash", "audit.hash_unknown"
            )
        if expected is None:
            raise HashError(
                "the audit log records no hash yet, and this process was not given the "
                "consortium's crypto profile: start the exchange once (it records its "
                "profile's hash)",
                "audit.hash_unknown",
            )
        return hasher_named(expected)
    if expected is not None and recorded != expected:
        raise HashError(
            f"the audit log is hashed with {recorded}, and this consortium's crypto profile "
            f"hashes with {expected}: the database belongs to another consortium's exchange",
            "audit.hash_mismatch",
        )
    return hasher_named(recorded)


async def record_hash(conn: asyncpg.Pool | asyncpg.Connection, hash_name: str) -> None:
    """As the tables' owner, when the exchange starts: an empty log with no hash recorded
    takes ``hash_name`` (its crypto profile's); a log of another hash is refused
    (``audit.hash_mismatch``), before anything is appended to it or signed."""
    hasher_named(hash_name)
    await conn.execute(
        "UPDATE audit_tree SET hash = $1 WHERE id = 1 AND hash IS NULL AND size = 0", hash_name
    )
    row = await conn.fetchrow("SELECT size, hash FROM audit_tree WHERE id = 1")
    log_hasher(row["hash"], row["size"], hash_name)


class AuditStore:
    """The log's store. It hashes with the hash the log records; ``profile`` (the
    consortium's crypto profile), when given, must agree with it, and is what an empty log
    with no hash recorded yet is hashed with (refused without one: never SHA-256 by
    default)."""

    def __init__(self, pool: asyncpg.Pool, profile: Profile | None = None) -> None:
        self.pool = pool
        self._expected = None if profile is None else profile.hash_name
        self._hasher: Hasher | None = None  # once the log has recorded its hash
        # The tree as the appends sent so far will leave it (None: read it again once they
        # have landed), and those still on their way.
        self._state: tuple[Frontier, bytes, Hasher] | None = None
        self._on_way: set[asyncio.Future[bool]] = set()
        # The append whose outcome _state foresees (None: _state was read, it is committed).
        self._built_on: asyncio.Future[bool] | None = None
        self._reload = asyncio.Lock()

    # Appending --------------------------------------------------------------------------------

    async def append(self, record: dict[str, Any], recorded_at: datetime) -> int:
        return (await self.append_many([(record, recorded_at)]))[0]

    async def append_many(self, batch: Sequence[tuple[dict[str, Any], datetime]]) -> list[int]:
        """Append records in ONE transaction; return their sequence numbers (leaf indices).

        One round trip when the tree is as this store expects it (the usual case: the read
        API is the main appender). An append is computed on the tree as the appends of this
        store still on their way will leave it, and sent at once, so that the next flush is
        in the database while this one commits. The database refuses an append that does not
        extend the tree as it stands (its size, and its first chain link on the stored chain
        head: audit.schema step 3), and writes nothing of it; it writes an append's rows before
        it takes the lock that orders the appends (step 9), so one flush's rows go in while
        the one before commits. Refused while the append it was
        built on was still on its way (it reached the database first), it is sent again once
        that one has landed; refused otherwise (that one failed, or another process appended
        first), it is computed again on the tree as committed, once every append sent before
        it has landed. Raises AuditWriteError on any failure: the caller must then send no
        data.
        """
        try:
            for _ in range(20):
                if self._state is None:
                    async with self._reload:  # one reads the tree; the others build on it
                        while self._state is None and self._on_way:  # what was sent lands first
                            await asyncio.wait(list(self._on_way))
                        if self._state is None:
                            self._state, self._built_on = await self._load_state(), None
                base = self._built_on  # still on its way: this one may reach the database first
                if base is not None and base.done():
                    base = None
                args, seqs, after = self._compute(batch, *self._state)
                landed = asyncio.get_running_loop().create_future()
                self._state, self._built_on = after, landed  # the next append builds on this one
                self._on_way.add(landed)
                done = False
                try:
                    done = await self.pool.fetchval(_APPEND_CALL, *args)
                    if not done and base is not None and await asyncio.shield(base):
                        done = await self.pool.fetchval(_APPEND_CALL, *args)
                finally:
                    if not done:
                        self._state = None
                    self._on_way.discard(landed)
                    landed.set_result(bool(done))
                if done:
                    return seqs
            raise AuditWriteError("the audit log kept moving under this writer")
        except HashError as exc:
            self._state = None
            raise AuditWriteError(str(exc), code=exc.code) from exc
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            self._state = None
            if getattr(exc, "sqlstate", None) == _HASH_REFUSED:
                self._hasher = None
                raise AuditWriteError(str(exc), code="audit.hash_mismatch") from exc
            raise AuditWriteError("the audit record could not be written") from exc

    async def hasher(self, conn: asyncpg.Connection | None = None) -> Hasher:
        """The log's hash (read once it is recorded)."""
        if self._hasher is None:
            row = await (conn or self.pool).fetchrow(
                "SELECT size, hash FROM audit_tree WHERE id = 1"
            )
            return self._learn(row["hash"], row["size"])
        return self._hasher

    def _learn(self, recorded: str | None, size: int) -> Hasher:
        hasher = log_hasher(recorded, size, self._expected)
        if recorded is not None:
            self._hasher = hasher
        return hasher

    async def _load_state(self) -> tuple[Frontier, bytes, Hasher]:
        tree = await self.pool.fetchrow(
            "SELECT size, frontier, chain_head, hash FROM audit_tree WHERE id = 1"
        )
        hasher = self._learn(tree["hash"], tree["size"])
        frontier = Frontier(tree["size"], [bytes(h) for h in tree["frontier"]])
        return frontier, bytes(tree["chain_head"]), hasher

    def _compute(
        self,
        batch: Sequence[tuple[dict[str, Any], datetime]],
        frontier: Frontier,
        chain: bytes,
        hasher: Hasher,
    ) -> tuple[list[Any], list[int], tuple[Frontier, bytes, Hasher]]:
        previous = chain
        frontier = Frontier(frontier.size, list(frontier.hashes))
        expected = frontier.size
        digest = hasher.digest
        nodes: list[tuple[int, int, bytes]] = []
        texts: list[bytes] = []
        leaves: list[bytes] = []
        chains: list[bytes] = []
        for seq, (record, recorded_at) in enumerate(batch, expected):
            data = canonical_bytes({**record, "seq": seq, "recorded_at": recorded_at.isoformat()})
            if b"\n" in data:  # never: canonical JSON escapes every control character
                raise AuditWriteError("an audit record's canonical text holds a line break")
            leaf = digest(b"\x00" + data)
            chain = digest(chain + data)
            if completed := frontier.append(leaf, hasher):
                nodes += [n for n in completed if n[0] >= STORED_FROM]
            texts.append(data)
            leaves.append(leaf)
            chains.append(chain)
        seqs = list(range(expected, frontier.size))
        get = [record.get for record, _ in batch]
        patients = [g("patient_id") for g in get]
        # A record that touched several patients lists them: each is indexed with its seq.
        links = [
            (patient, seq)
            for seq, g in zip(seqs, get, strict=True)
            if isinstance(many := g("patients"), list)
            for patient in _patient_ids(many)
        ]
        # As audit_append (audit.schema steps 6 and 7) takes them: texts and hashes packed.
        args = [
            expected,
            [at for _, at in batch],
            [UUID(p) if p else None for p in patients],
            [g("person") for g in get],
            [g("institution") for g in get],
            [record["action"] for record, _ in batch],
            [g("decision") for g in get],
            [g("purpose") for g in get],
            [bool(g("break_glass")) for g in get],
            b"\n".join(texts).decode(),
            b"".join(leaves),
            b"".join(chains),
            [n[0] for n in nodes],
            [n[1] for n in nodes],
            b"".join(n[2] for n in nodes),
            frontier.size,
            frontier.hashes,
            chain,
            [p for p, _ in links],
            [seq for _, seq in links],
            previous,
            hasher.name,
        ]
        return args, seqs, (frontier, chain, hasher)

    # The tree ---------------------------------------------------------------------------------

    async def tree(self, conn: asyncpg.Connection | None = None) -> TreeState:
        row = await (conn or self.pool).fetchrow(
            "SELECT size, frontier, hash FROM audit_tree WHERE id = 1"
        )
        hasher = self._learn(row["hash"], row["size"])
        frontier = Frontier(row["size"], [bytes(h) for h in row["frontier"]])
        return TreeState(frontier.size, frontier.root(hasher))

    async def _subtree_source(
        self, conn: asyncpg.Connection, ranges: Sequence[tuple[int, int]], hasher: Hasher
    ) -> Callable[[int, int], bytes]:
        """One query for the leaf hashes and one for the stored nodes the given leaf ranges
        need; a lookup for each range (a node below ``STORED_FROM`` computed from its leaves)."""
        pieces = {p for start, end in ranges for p in perfect_pieces(start, end)}
        leaves = sorted(
            {
                seq
                for level, idx in pieces
                if level < STORED_FROM
                for seq in range(idx << level, (idx + 1) << level)
            }
        )
        inner = [(level, idx) for level, idx in pieces if level >= STORED_FROM]
        known: dict[tuple[int, int], bytes] = {}
        for r in await conn.fetch(
            "SELECT seq, leaf_hash FROM audit_log WHERE seq = ANY($1)", leaves
        ):
            known[(0, r["seq"])] = bytes(r["leaf_hash"])
        for level, idx in pieces:
            if 0 < level < STORED_FROM:
                under = range(idx << level, (idx + 1) << level)
                known[(level, idx)] = root([known[(0, seq)] for seq in under], hasher)
        if inner:
            for r in await conn.fetch(
                "SELECT level, idx, hash FROM audit_nodes WHERE (level, idx) IN "
                "(SELECT * FROM unnest($1::smallint[], $2::bigint[]))",
                [lv for lv, _ in inner],
                [i for _, i in inner],
            ):
                known[(r["level"], r["idx"])] = bytes(r["hash"])

        def subtree(start: int, end: int) -> bytes:
            return fold([known[p] for p in perfect_pieces(start, end)], hasher)

        return subtree

    async def _proof(
        self, conn: asyncpg.Connection, make: Callable[..., list[bytes]], *args: int
    ) -> list[bytes]:
        asked: list[tuple[int, int]] = []
        hasher = await self.hasher(conn)

        def record(start: int, end: int) -> bytes:
            asked.append((start, end))
            return b"\x00" * hasher.size

        make(*args, record)  # the shape of a proof does not depend on hash values
        return make(*args, await self._subtree_source(conn, asked, hasher))

    async def inclusion(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash of record ``seq`` and its inclusion proof in the tree of ``size``."""
        async with self.pool.acquire() as conn:
            leaf = await conn.fetchval("SELECT leaf_hash FROM audit_log WHERE seq = $1", seq)
            return bytes(leaf), await self._proof(conn, inclusion_proof, seq, size)

    async def consistency(self, first: int, second: int) -> list[bytes]:
        async with self.pool.acquire() as conn:
            return await self._proof(conn, consistency_proof, first, second)

    # Signed heads -----------------------------------------------------------------------------

    async def last_head(self) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT size, root, note, signed_at FROM audit_heads ORDER BY size DESC LIMIT 1"
        )

    async def record_head(
        self, make_note: Callable[[int, bytes], str], signed_at: datetime
    ) -> str | None:
        """Sign the current tree if it grew, after proving it extends the last signed head."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-audit-head'))")
            state = await self.tree(conn)
            last = await conn.fetchrow(
                "SELECT size, root FROM audit_heads ORDER BY size DESC LIMIT 1"
            )
            if state.size == 0 or (last is not None and last["size"] >= state.size):
                return None
            if last is not None:
                proof = await self._proof(conn, consistency_proof, last["size"], state.size)
                if not verify_consistency(
                    await self.hasher(conn),
                    last["size"],
                    state.size,
                    proof,
                    bytes(last["root"]),
                    state.root,
                ):
                    raise AuditIntegrityError(
                        f"the audit tree at size {state.size} does not extend the signed head "
                        f"at size {last['size']}; no head is signed: run `hie audit verify`"
                    )
            note = make_note(state.size, state.root)
            await conn.execute(
                "INSERT INTO audit_heads VALUES ($1, $2, $3, $4)",
                state.size,
                state.root,
                note,
                signed_at,
            )
            return note

    # Reading ----------------------------------------------------------------------------------

    async def search(self, query: Query) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
        """(total matching, one page of (seq, record)) in log order."""
        total = await self.pool.fetchval(
            f"SELECT count(*) FROM audit_log WHERE {query.where}", *query.args
        )
        n = len(query.args)
        rows = await self.pool.fetch(
            f"SELECT seq, record_text FROM audit_log WHERE {query.where} "
            f"ORDER BY seq LIMIT ${n + 1} OFFSET ${n + 2}",
            *query.args,
            query.count,
            query.offset,
        )
        return int(total), [(r["seq"], json.loads(r["record_text"])) for r in rows]

    async def records_of(
        self, *, person: str | None, token_id: str | None, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """What one person (or one token) was given in a window: the breach-scope question."""
        # Two statements, so that a person's goes down their (person, recorded_at) index
        # rather than through every record of the window.
        if person is not None:
            rows = await self.pool.fetch(
                "SELECT record_text FROM audit_log WHERE person = $3 AND recorded_at >= $1 "
                "AND recorded_at < $2 "
                "AND ($4::text IS NULL OR record_text::jsonb->>'token_id' = $4) ORDER BY seq",
                start,
                end,
                person,
                token_id,
            )
        else:
            rows = await self.pool.fetch(
                "SELECT record_text FROM audit_log WHERE recorded_at >= $1 AND recorded_at < $2 "
                "AND record_text::jsonb->>'token_id' = $3 ORDER BY seq",
                start,
                end,
                token_id,
            )
        return [json.loads(r["record_text"]) for r in rows]

    async def alerts(self, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """Records that raised an alert, newest first."""
        rows = await self.pool.fetch(
            "SELECT seq, recorded_at, record_text FROM audit_log "
            "WHERE record_text::jsonb->>'alert' IS NOT NULL ORDER BY seq DESC LIMIT $1",
            limit,
        )
        return [
            (
                r["seq"],
                {**json.loads(r["record_text"]), "recorded_at": r["recorded_at"].isoformat()},
            )
            for r in rows
        ]

    async def unreviewed_break_glass(self) -> list[tuple[int, dict[str, Any]]]:
        # Only permitted reviews name a grant: a refused one (a bad form, a stale CSRF token)
        # has no reviewed_seq, and one NULL in a NOT IN list would empty the whole queue.
        rows = await self.pool.fetch(
            "SELECT seq, record_text FROM audit_log WHERE action = 'break-glass' "
            "AND decision = 'permit' AND seq NOT IN (SELECT (record_text::jsonb->>'reviewed_seq')"
            "::bigint FROM audit_log WHERE action = 'break-glass.review' "
            "AND record_text::jsonb ? 'reviewed_seq') ORDER BY seq"
        )
        return [(r["seq"], json.loads(r["record_text"])) for r in rows]

    async def record(self, seq: int) -> dict[str, Any] | None:
        text = await self.pool.fetchval("SELECT record_text FROM audit_log WHERE seq = $1", seq)
        return json.loads(text) if text else None
