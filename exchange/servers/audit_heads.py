"""The exchange's side of the audit log: signing tree heads with its key, publishing them on
``hie.<c>.audit.head``, and verifying the whole log (`hie audit verify`).

Heads are signed as the consortium's crypto profile says: Ed25519 over SHA-256 trees (intl), or
SM2 over SM3 trees (gm), the checkpoint's origin naming the hash (audit.checkpoint)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from nats.js import JetStreamContext

import cryptoprofile
from audit.checkpoint import (
    ED25519,
    SM2_TYPE,
    Checkpoint,
    CheckpointError,
    origin_for,
    sign_note,
    verify_note,
)
from audit.digests import ENVELOPE, FOREIGN, Digest, hex_digest, recorded
from audit.merkle import Hasher, HashError, hasher_named
from audit.postgres import AuditStore
from audit.verify import Finding, Report
from audit.verify_rows import CHUNK, WORKERS, verify_rows
from domain.submission import Submission

log = logging.getLogger(__name__)


class LedgerReader(Protocol):
    """What the check of the ledger's anchors needs of the ledger: its events in order."""

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]: ...


def head_subject(consortium: str) -> str:
    return f"hie.{consortium}.audit.head"


class HeadSigner:
    """Signs checkpoints of the consortium's audit log with the exchange's audit key, as its
    crypto profile says: origin ``county-hie/<consortium>/audit`` and Ed25519 (intl), or
    ``county-hie/<consortium>/audit/sm3`` and SM2 (gm), the key made from the same 32-byte
    audit secret (``Profile.key_from_seed``)."""

    def __init__(self, consortium: str, seed: bytes, profile: cryptoprofile.Profile) -> None:
        self.profile = profile
        self.hasher: Hasher = hasher_named(profile.hash_name)
        self.origin = origin_for(f"county-hie/{consortium}/audit", profile.hash_name)
        self._key = profile.key_from_seed(seed)
        self._public = self._key.public_key()
        self.key_type = ED25519 if profile.signature == cryptoprofile.ED25519 else SM2_TYPE
        self.public_raw = base64.b64decode(cryptoprofile.public_key_b64(self._public))

    def note(self, size: int, root: bytes) -> str:
        return sign_note(
            Checkpoint(self.origin, size, root),
            self.origin,
            self.public_raw,
            self._key.sign,
            self.key_type,
        )

    def verify(self, text: str) -> Checkpoint:
        checkpoint = verify_note(
            text,
            self.origin,
            self.public_raw,
            lambda message, signature: cryptoprofile.verify(self._public, signature, message),
            self.key_type,
            self.hasher.name,
        )
        if checkpoint.origin != self.origin:
            raise CheckpointError("the checkpoint names another log's origin")
        return checkpoint


async def sign_heads(
    store: AuditStore,
    signer: HeadSigner,
    js: JetStreamContext,
    consortium: str,
    interval: float,
    stop: asyncio.Event,
    every_records: int = 1000,
) -> None:
    """Sign and publish a head when the log grew by ``every_records`` or ``interval`` passed."""
    loop = asyncio.get_running_loop()
    last_size, last_time = -1, 0.0
    while not stop.is_set():
        try:
            size = (await store.tree()).size
            due = loop.time() - last_time >= interval or size - last_size >= every_records
            if size != last_size and due:
                note = await store.record_head(signer.note, datetime.now(UTC))
                if note is not None:
                    await js.publish(head_subject(consortium), note.encode(), timeout=10)
                last_size, last_time = size, loop.time()
        except Exception:
            log.exception("signing the audit tree head failed")
        try:
            await asyncio.wait_for(stop.wait(), min(interval, 0.5))
        except TimeoutError:
            pass


async def verify_log(
    pool: asyncpg.Pool,
    signer: HeadSigner,
    database_url: str | None = None,
    *,
    workers: int = WORKERS,
    chunk: int = CHUNK,
) -> Report:
    """Recompute the whole log from its rows and check it against every signed head; with
    the database's URL, a large log is read and hashed by worker processes side by side. The
    log is hashed as it records (``audit_tree.hash``), which must be the signer's profile's
    hash: else the one finding ``audit.hash_mismatch`` and nothing else is checked."""
    heads: dict[int, bytes] = {}
    bad_heads: list[Finding] = []
    recorded = await pool.fetchval("SELECT hash FROM audit_tree WHERE id = 1")
    if recorded is not None and recorded != signer.hasher.name:
        report = Report()
        report.findings.append(
            Finding(
                "audit.hash_mismatch",
                f"the audit log is hashed with {recorded}, and this consortium's crypto profile "
                f"({signer.profile.name}) hashes with {signer.hasher.name}",
                None,
            )
        )
        return report
    for row in await pool.fetch("SELECT size, root, note FROM audit_heads ORDER BY size"):
        try:
            checkpoint = signer.verify(row["note"])
        except CheckpointError as exc:
            bad_heads.append(
                Finding(
                    "audit.head_signature",
                    f"the head at size {row['size']} does not verify: {exc}",
                    None,
                )
            )
            continue
        if checkpoint.size != row["size"] or checkpoint.root != bytes(row["root"]):
            bad_heads.append(
                Finding(
                    "audit.head_signature",
                    f"the stored head at size {row['size']} differs from its signed note",
                    None,
                )
            )
            continue
        heads[checkpoint.size] = checkpoint.root
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        try:
            report = await verify_rows(
                conn,
                heads,
                database_url,
                workers=workers,
                chunk=chunk,
                expected_hash=signer.hasher.name,
            )
        except HashError as exc:
            report = Report(findings=[Finding(exc.code, str(exc), None)])
    report.findings[:0] = bad_heads
    return report


async def verify_ledger(pool: asyncpg.Pool, ledger: LedgerReader, hash_name: str) -> list[Finding]:
    """Every accepted submission in the ledger is anchored in the audit log with the same
    content digest, and every anchored one is still in the ledger: none altered, none removed.

    ``hash_name`` is the log's hash (``audit_tree.hash``, the consortium's crypto profile's,
    which ``verify_log`` has checked it is): an anchor is ``envelope_sha256`` under intl and
    ``envelope_sm3`` under gm (``audit.digests``). Each anchor is checked with the hash its
    field names; one that names another hash than the log's is a finding besides
    (``audit.digest_hash``)."""
    findings: list[Finding] = []
    anchored: dict[int, Digest] = {}
    # A submission whose first answer was lost (the database connection dropped while its
    # commit was being confirmed, as in a failover) is answered again as a repeat: that
    # answer anchors it, if it names the content the ledger holds.
    repeats: dict[int, list[Digest]] = {}
    for row in await pool.fetch(
        "SELECT record_text::jsonb AS r FROM audit_log WHERE action = 'submission' "
        "AND decision = 'accepted'"
    ):
        record = json.loads(row["r"])
        anchor = recorded(record, ENVELOPE, hash_name)
        if anchor is None:
            continue
        position = int(record["position"])
        if anchor.foreign:
            findings.append(
                Finding(
                    FOREIGN,
                    anchor.foreign_message(f"the anchor of ledger position {position}"),
                    None,
                )
            )
        if record.get("repeat"):
            repeats.setdefault(position, []).append(anchor)
        else:
            anchored[position] = anchor
    # Each held submission's digest with the log's hash, and with another hash where an
    # anchor of it names one (only then: a log's anchors are of its own hash).
    others: dict[int, set[str]] = {}
    for pos, anchor in [*anchored.items(), *((p, d) for p, ds in repeats.items() for d in ds)]:
        if anchor.foreign:
            others.setdefault(pos, set()).add(anchor.hash_name)
    held: dict[int, str] = {}
    held_other: dict[tuple[int, str], str] = {}
    position = 0
    while True:
        events = await asyncio.to_thread(ledger.read, position, 1000)
        if not events:
            break
        for pos, event in events:
            if isinstance(event, Submission.Accepted):
                text = event.envelope.encode()
                held[pos] = hex_digest(text, hash_name)
                for name in others.get(pos, ()):
                    held_other[pos, name] = hex_digest(text, name)
        position = events[-1][0]

    def holds(pos: int, anchor: Digest) -> bool:
        """Whether the ledger holds at ``pos`` the content ``anchor`` names, by its hash."""
        if anchor.foreign:
            return held_other.get((pos, anchor.hash_name)) == anchor.value
        return held.get(pos) == anchor.value

    for pos, candidates in repeats.items():
        if pos not in anchored and (found := [d for d in candidates if holds(pos, d)]):
            anchored[pos] = found[0]
    for pos in sorted(set(anchored) | set(held)):
        if pos not in held:
            findings.append(
                Finding(
                    "ledger.event_missing",
                    f"the submission anchored at ledger position {pos} is no longer in the ledger",
                    None,
                )
            )
        elif pos not in anchored:
            findings.append(
                Finding(
                    "ledger.not_anchored",
                    f"the submission at ledger position {pos} has no anchor in the audit log",
                    None,
                )
            )
        elif not holds(pos, anchored[pos]):
            findings.append(
                Finding(
                    "ledger.event_changed",
                    f"the submission at ledger position "
                    f"{pos} differs from the content anchored in the audit log",
                    None,
                )
            )
    return findings
