"""The shared patient record in PostgreSQL (asyncpg), following the ledger.

Each batch of ledger events is applied in ONE transaction together with the projection's
tracked position (locked FOR UPDATE), so a restart, or a second runner, never applies an
event twice. Every entry row keeps the ledger position at which it became current
(``valid_from``) and, later, stopped being current (``valid_to``), for "as it stood then".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from domain.categories import CATEGORIES, categories_of
from domain.clinical import ENTRY_KINDS, ConsentPayload, PatientPayload, RetractPayload
from domain.consent_items import (
    CareContractPayload,
    ConsentWithdrawalPayload,
    GuardianPayload,
    SealPayload,
    UnsealPayload,
)
from domain.identity import RESIDENT_ID_SYSTEM
from domain.submission import validate_envelope
from projections import referrals
from projections.render import RESOURCE_TYPES, dumps, entry_id, render

log = logging.getLogger(__name__)

NAME = "patient_record"
# The ledger NOTIFYs this channel in each commit that appends: a runner that has caught up
# wakes on it rather than on its next poll (the poll stays, should the LISTEN connection die).
LEDGER_CHANNEL = "hie_ledger"

SCHEMA = """
CREATE TABLE IF NOT EXISTS projection_position (
    name text PRIMARY KEY, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_clock (
    position bigint PRIMARY KEY, at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_clock_at ON ledger_clock (at);
CREATE TABLE IF NOT EXISTS institutions (
    code text PRIMARY KEY, name text NOT NULL, level text NOT NULL, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id uuid PRIMARY KEY, birth_date date, sex text, temporary boolean NOT NULL,
    merged_into uuid, demographics jsonb, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS patients_merged_into ON patients (merged_into);
CREATE TABLE IF NOT EXISTS identity_merges (
    source uuid NOT NULL, target uuid NOT NULL, valid_from bigint NOT NULL, valid_to bigint,
    PRIMARY KEY (source, valid_from));
CREATE INDEX IF NOT EXISTS identity_merges_target ON identity_merges (target);
CREATE TABLE IF NOT EXISTS patient_identifiers (
    system text NOT NULL, value text NOT NULL, patient_id uuid NOT NULL,
    institution text, position bigint NOT NULL, PRIMARY KEY (system, value));
CREATE INDEX IF NOT EXISTS patient_identifiers_patient ON patient_identifiers (patient_id);
CREATE TABLE IF NOT EXISTS record_entries (
    entry_id uuid NOT NULL, patient_id uuid NOT NULL, institution text NOT NULL,
    record text NOT NULL, source_id text NOT NULL, kind text NOT NULL,
    submission_id text NOT NULL, resource text NOT NULL, valid_from bigint NOT NULL,
    valid_to bigint, ended_by text, PRIMARY KEY (entry_id, valid_from));
CREATE INDEX IF NOT EXISTS record_entries_patient ON record_entries (patient_id, valid_from);
CREATE INDEX IF NOT EXISTS record_entries_current ON record_entries (entry_id)
    WHERE valid_to IS NULL;
CREATE TABLE IF NOT EXISTS consents (
    consent_id uuid PRIMARY KEY, patient_id uuid NOT NULL, institution text NOT NULL,
    consent_type text NOT NULL, scope text[] NOT NULL, purposes text[] NOT NULL,
    valid_from timestamptz NOT NULL, valid_to timestamptz, signed_by text NOT NULL,
    resource text NOT NULL, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS consents_patient ON consents (patient_id);
ALTER TABLE record_entries ADD COLUMN IF NOT EXISTS category_mask integer;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS categories text[];
ALTER TABLE consents ADD COLUMN IF NOT EXISTS guardian text;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS source_id text;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS withdrawn_position bigint;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS withdrawn_at timestamptz;
CREATE TABLE IF NOT EXISTS guardians (
    patient_id uuid NOT NULL, guardian text NOT NULL, relationship text NOT NULL,
    institution text NOT NULL, valid_from timestamptz NOT NULL, valid_to timestamptz,
    position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS guardians_patient ON guardians (patient_id);
CREATE TABLE IF NOT EXISTS care_contracts (
    patient_id uuid NOT NULL, institution text NOT NULL, doctor text NOT NULL,
    valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS care_contracts_patient ON care_contracts (patient_id);
CREATE TABLE IF NOT EXISTS seals (
    patient_id uuid NOT NULL, institution text NOT NULL, readers text[] NOT NULL,
    reason text NOT NULL, sealed_at timestamptz NOT NULL, position bigint NOT NULL,
    unsealed_position bigint, unsealed_at timestamptz);
CREATE INDEX IF NOT EXISTS seals_patient ON seals (patient_id);
""" + referrals.SCHEMA

TABLES = ("ledger_clock", "institutions", "patients", "identity_merges", "patient_identifiers",
          "record_entries", "consents", "guardians", "care_contracts", "seals",
          *referrals.TABLES)

ReadLedger = Callable[[int, int], Awaitable[Sequence[tuple[int, Any]]]]


async def create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-projection-schema'))")
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO projection_position (name, position) VALUES ($1, 0) "
            "ON CONFLICT (name) DO NOTHING", NAME)


class PatientRecordProjection:
    """Follows the ledger and keeps the shared patient record current."""

    def __init__(self, pool: asyncpg.Pool, read: ReadLedger, *, batch: int = 500) -> None:
        self.pool = pool
        self.read = read
        self.batch = batch
        self._advanced = asyncio.Condition()
        self._names: dict[str, str] = {}  # institution code -> name

    async def position(self) -> int:
        return int(await self.pool.fetchval(
            "SELECT position FROM projection_position WHERE name = $1", NAME))

    async def catch_up_once(self) -> int:
        """Apply the next batch of ledger events; return how many were applied."""
        start = await self.position()
        events = await self.read(start, self.batch)
        if not events:
            return 0
        changes = await self._prepare(events)
        return len(events) if await self._write(start, events[-1][0], changes) else 0

    async def _prepare(self, events: Sequence[tuple[int, Any]]) -> _Changes:
        """A batch's rows, worked out before any transaction opens."""
        changes = _Changes()
        for position, event in events:
            await self._apply(changes, position, event)
        return changes

    async def _write(self, start: int, end: int, changes: _Changes) -> bool:
        """Write a batch prepared from ``start`` and move the position to ``end``, in one
        transaction; False (nothing written) if the position is no longer ``start``."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME)
            if current != start:
                return False  # another runner moved on meanwhile; read again from there
            await changes.flush(conn)
            await conn.execute(
                "UPDATE projection_position SET position = $2 WHERE name = $1", NAME, end)
        async with self._advanced:
            self._advanced.notify_all()
        return True

    async def run(self, stop: asyncio.Event, idle: float = 0.05) -> None:
        """Follow the ledger until ``stop``; any failure restarts from the tracked position."""
        appended = asyncio.Event()

        def wake(*_: Any) -> None:
            appended.set()

        listener = await self._listen(wake)
        try:
            while not stop.is_set():
                try:
                    await self._follow(stop, appended, idle)
                except Exception:
                    log.exception("projection %s failed; restarting from its tracked position",
                                  NAME)
                    await asyncio.sleep(1.0)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(LEDGER_CHANNEL, wake)
                with contextlib.suppress(Exception):
                    await self.pool.release(listener)

    async def _follow(self, stop: asyncio.Event, appended: asyncio.Event, idle: float) -> None:
        """Catch up in a pipeline: the next batch is read and prepared while the last one is
        being written (PostgreSQL works while Python does). Returns when a rival runner moved
        the position, so the caller starts again from the tracked one."""
        start = await self.position()
        writing: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set():
                appended.clear()  # a commit during this round wakes the next one at once
                events = await self.read(start, self.batch)
                if not events:
                    if writing is not None:
                        done, writing = await writing, None
                        if not done:
                            return
                        continue
                    await _first(stop, appended, timeout=idle)
                    if not appended.is_set() and await self.position() != start:
                        return  # rebuilt (or moved by a rival) while idle: start from there
                    continue
                changes = await self._prepare(events)
                if writing is not None and not await writing:
                    return
                writing = asyncio.create_task(self._write(start, events[-1][0], changes))
                start = events[-1][0]
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                with contextlib.suppress(Exception):
                    await writing

    async def _listen(self, wake: Callable[..., None]) -> asyncpg.Connection | None:
        try:
            conn = await self.pool.acquire()
            await conn.add_listener(LEDGER_CHANNEL, wake)
            return conn
        except Exception:  # polling alone still follows the ledger
            log.warning("projection %s cannot LISTEN; polling only", NAME)
            return None

    async def wait_for(self, position: int, timeout: float = 30.0) -> None:
        """Wait until the projection has applied the ledger up to ``position``."""
        async def reached() -> None:
            while await self.position() < position:
                async with self._advanced:
                    try:
                        await asyncio.wait_for(self._advanced.wait(), 0.1)
                    except TimeoutError:
                        pass
        await asyncio.wait_for(reached(), timeout)

    async def rebuild(self) -> None:
        """Forget every row and the position; the runner then replays the whole ledger."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME)
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
            await conn.execute("UPDATE projection_position SET position = 0 WHERE name = $1", NAME)

    # Applying one ledger event ----------------------------------------------------------------

    async def _apply(self, changes: _Changes, position: int, event: Any) -> None:
        kind = type(event).__qualname__
        changes.clock.append((position, event.timestamp))
        if kind == "Institution.Registered":
            changes.first(
                "INSERT INTO institutions (code, name, level, position) VALUES ($1, $2, $3, $4)",
                event.code, event.name, event.level, position)
            self._names[event.code] = event.name
        elif kind == "PatientIdentity.Registered":
            changes.first("INSERT INTO patients (patient_id, birth_date, sex, temporary, position) "
                       "VALUES ($1, $2::text::date, $3, $4, $5)", event.originator_id,
                       event.birth_date, event.sex, event.resident_id is None, position)
            if event.resident_id is not None:
                changes.first(_INSERT_IDENTIFIER, RESIDENT_ID_SYSTEM, event.resident_id,
                              event.originator_id, None, position)
        elif kind == "PatientIdentity.IdentifierLinked":
            changes.first(_INSERT_IDENTIFIER, event.system, event.value, event.originator_id,
                       event.institution, position)
        elif kind == "PatientIdentity.Merged":
            changes.op("UPDATE patients SET merged_into = $2 WHERE patient_id = $1",
                       event.originator_id, event.target)
            changes.op("INSERT INTO identity_merges (source, target, valid_from) "
                       "VALUES ($1, $2, $3)", event.originator_id, event.target, position)
        elif kind == "PatientIdentity.Unmerged":
            changes.op("UPDATE patients SET merged_into = NULL WHERE patient_id = $1",
                       event.originator_id)
            changes.op("UPDATE identity_merges SET valid_to = $2 "
                       "WHERE source = $1 AND valid_to IS NULL", event.originator_id, position)
        elif kind == "Submission.Accepted":
            await self._submission(changes, position, event)
        elif kind.startswith("Referral."):
            referrals.apply(changes, position, event, kind)

    async def _institution_name(self, code: str) -> str:
        if code not in self._names:
            self._names[code] = await self.pool.fetchval(
                "SELECT name FROM institutions WHERE code = $1", code) or code
        return self._names[code]

    async def _submission(self, changes: _Changes, position: int, event: Any) -> None:
        valid, problems = validate_envelope(_loads(event.envelope))
        if valid is None:  # accepted once, so this is a code change that broke replay
            raise RuntimeError(f"ledger event at position {position} no longer validates: "
                               f"{[p.code for p in problems]}")
        institution = valid.institution
        name = await self._institution_name(institution)
        uuids = {p: UUID(p) for p in set(event.patient_ids)}  # a patient's items share one
        for item, patient_id in zip(valid.items, event.patient_ids, strict=True):
            pid = uuids[patient_id]
            payload = item.payload
            if isinstance(payload, PatientPayload):
                changes.op("UPDATE patients SET demographics = $2 WHERE patient_id = $1",
                           pid, payload.model_dump_json(exclude={"patient"}))
            elif isinstance(payload, RetractPayload):
                changes.end(entry_id(institution, payload.record), position, "retracted")
            elif isinstance(payload, ConsentPayload):
                rid = entry_id(institution, item.source_id)
                resource = dumps(render(item.kind, payload, resource_id=rid, patient_id=pid,
                                        institution=institution, institution_name=name))
                changes.op(
                    "INSERT INTO consents (consent_id, patient_id, institution, consent_type, "
                    "scope, purposes, valid_from, valid_to, signed_by, resource, position, "
                    "categories, guardian, source_id) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    rid, pid, institution, payload.consent_type, list(payload.scope),
                    list(payload.purposes), payload.valid_from, payload.valid_to,
                    payload.signed_by, resource, position,
                    list(payload.categories) if payload.categories else None,
                    payload.guardian.resident_id if payload.guardian else None, item.source_id)
            elif item.kind in ENTRY_KINDS:
                eid = entry_id(institution, item.record)
                categories = categories_of(item.kind, payload)
                fhir = render(item.kind, payload, resource_id=eid, patient_id=pid,
                              institution=institution, institution_name=name)
                fhir["meta"]["versionId"] = str(position)
                fhir["meta"]["security"] = [{"system": CATEGORY_SYSTEM, "code": c}
                                            for c in categories]
                changes.end(eid, position, "amended" if item.amends else "superseded")
                changes.entries[eid] = [
                    eid, pid, institution, item.record, item.source_id, item.kind,
                    valid.submission_id, dumps(fhir), position, None, None, mask_of(categories)]
            elif isinstance(payload, ConsentWithdrawalPayload):
                owner, _, sid = payload.consent.partition("/")
                changes.op("UPDATE consents SET withdrawn_position = $2, withdrawn_at = $3 "
                           "WHERE consent_id = $1 AND withdrawn_position IS NULL",
                           entry_id(owner, sid), position, event.timestamp)
            elif isinstance(payload, GuardianPayload):
                changes.op("INSERT INTO guardians (patient_id, guardian, relationship, "
                           "institution, valid_from, valid_to, position) VALUES "
                           "($1, $2, $3, $4, $5, $6, $7)", pid, payload.guardian.resident_id,
                           payload.relationship, institution, payload.valid_from,
                           payload.valid_to, position)
            elif isinstance(payload, CareContractPayload):
                changes.op("INSERT INTO care_contracts (patient_id, institution, doctor, "
                           "valid_from, valid_to, position) VALUES ($1, $2, $3, $4, $5, $6)",
                           pid, institution, payload.doctor, payload.valid_from,
                           payload.valid_to, position)
            elif isinstance(payload, SealPayload):
                changes.op("INSERT INTO seals (patient_id, institution, readers, reason, "
                           "sealed_at, position) VALUES ($1, $2, $3, $4, $5, $6)", pid,
                           institution, list(payload.readers), payload.reason,
                           event.timestamp, position)
            elif isinstance(payload, UnsealPayload):
                # An institution lifts its own seals only.
                changes.op("UPDATE seals SET unsealed_position = $2, unsealed_at = $3 "
                           "WHERE patient_id = $1 AND institution = $4 "
                           "AND unsealed_position IS NULL", pid, position, event.timestamp,
                           institution)
            # merge / unmerge: their identity events carry the change


_INSERT_IDENTIFIER = (
    "INSERT INTO patient_identifiers (system, value, patient_id, institution, position) "
    "VALUES ($1, $2, $3, $4, $5)")
_ENTRY_COLUMNS = ("entry_id", "patient_id", "institution", "record", "source_id", "kind",
                  "submission_id", "resource", "valid_from", "valid_to", "ended_by",
                  "category_mask")
# Each entry's data categories (domain/categories.py), also in its resource's meta.security;
# stored as bits (CATEGORIES order): a filter is one AND, and rows stay small.
CATEGORY_SYSTEM = "urn:county-hie:data-category"


@dataclass
class _Changes:
    """One batch's writes, gathered so that they go to PostgreSQL in a few round trips.

    ``inserts`` are new patients and identifiers: nothing earlier in a batch depends on them,
    so they go first, each kind in one statement; ``ops`` are the rest, in ledger order.
    ``entries`` holds the new entry versions of this batch (the latest per entry id; earlier
    versions of the same batch are in ``done`` with their end already set); ``ends`` the
    versions from earlier batches that this batch ends.
    """

    inserts: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    entries: dict[UUID, list[Any]] = field(default_factory=dict)
    done: list[list[Any]] = field(default_factory=list)
    ends: dict[UUID, tuple[int, str]] = field(default_factory=dict)
    clock: list[tuple[int, Any]] = field(default_factory=list)

    def first(self, sql: str, *args: Any) -> None:
        self.inserts.append((sql, args))

    def op(self, sql: str, *args: Any) -> None:
        self.ops.append((sql, args))

    def end(self, eid: UUID, position: int, why: str) -> None:
        row = self.entries.pop(eid, None)
        if row is not None:  # a version written in this same batch
            row[9], row[10] = position, why
            self.done.append(row)
        elif eid not in self.ends:
            self.ends[eid] = (position, why)

    async def flush(self, conn: asyncpg.Connection) -> None:
        for sql in dict.fromkeys(sql for sql, _ in self.inserts):
            await conn.executemany(sql, [args for s, args in self.inserts if s == sql])
        i = 0
        while i < len(self.ops):  # consecutive statements of one kind go as one executemany
            j = i
            while j < len(self.ops) and self.ops[j][0] == self.ops[i][0]:
                j += 1
            await conn.executemany(self.ops[i][0], [args for _, args in self.ops[i:j]])
            i = j
        if self.ends:
            ids = list(self.ends)
            await conn.execute(
                "UPDATE record_entries SET valid_to = v.pos, ended_by = v.why FROM "
                "unnest($1::uuid[], $2::bigint[], $3::text[]) AS v(id, pos, why) "
                "WHERE entry_id = v.id AND valid_to IS NULL",
                ids, [self.ends[e][0] for e in ids], [self.ends[e][1] for e in ids])
        rows = [tuple(r) for r in (*self.done, *self.entries.values())]
        if rows:
            await conn.copy_records_to_table("record_entries", records=rows,
                                             columns=_ENTRY_COLUMNS)
        if self.clock:
            await conn.copy_records_to_table("ledger_clock", records=self.clock,
                                             columns=("position", "at"))


def _loads(text: str) -> Any:
    """An accepted envelope's JSON: orjson reads every one the same as the gateway's parser
    did (no integer past 2**53 is ever signed), but for a lone surrogate, which it refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def _first(*events: asyncio.Event, timeout: float) -> None:
    """Wait until any of the events is set, or the timeout passes."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class PatientRecordReader:
    """Read-side queries over the shared patient record.

    A patient is read through its *root*: the identity it is (or was, at an earlier ledger
    position) merged into. The root's record is the entries of every identity merged into it.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find_patient(self, system: str, value: str) -> UUID | None:
        """The (current root) patient an identifier names."""
        found = await self.pool.fetchval(
            "SELECT patient_id FROM patient_identifiers WHERE system = $1 AND value = $2",
            system, value)
        return await self.root(found) if isinstance(found, UUID) else None

    async def position_at(self, instant: datetime) -> int:
        """The last ledger position whose event happened at or before ``instant``."""
        return int(await self.pool.fetchval(
            "SELECT coalesce(max(position), 0) FROM ledger_clock WHERE at <= $1", instant))

    async def root(self, patient_id: UUID, at: int | None = None) -> UUID | None:
        """The identity ``patient_id`` is merged into (itself if none); None if unknown."""
        if at is None:
            sql = ("WITH RECURSIVE up(id, depth) AS (SELECT patient_id, 0 FROM patients "
                   "WHERE patient_id = $1 UNION ALL SELECT p.merged_into, up.depth + 1 "
                   "FROM patients p JOIN up ON p.patient_id = up.id "
                   "WHERE p.merged_into IS NOT NULL AND up.depth < 64) "
                   "SELECT id FROM up ORDER BY depth DESC LIMIT 1")
            found = await self.pool.fetchval(sql, patient_id)
        else:
            sql = ("WITH RECURSIVE up(id, depth) AS (SELECT patient_id, 0 FROM patients "
                   "WHERE patient_id = $1 AND position <= $2 UNION ALL "
                   "SELECT g.target, up.depth + 1 FROM identity_merges g JOIN up "
                   "ON g.source = up.id WHERE g.valid_from <= $2 "
                   "AND (g.valid_to IS NULL OR g.valid_to > $2) AND up.depth < 64) "
                   "SELECT id FROM up ORDER BY depth DESC LIMIT 1")
            found = await self.pool.fetchval(sql, patient_id, at)
        return found if isinstance(found, UUID) else None

    async def members(self, root: UUID, at: int | None = None) -> list[UUID]:
        """The root and every identity merged into it (then, at ``at``)."""
        if at is None:
            sql = ("WITH RECURSIVE m(id) AS (SELECT $1::uuid UNION SELECT p.patient_id "
                   "FROM patients p JOIN m ON p.merged_into = m.id) SELECT id FROM m")
            rows = await self.pool.fetch(sql, root)
        else:
            sql = ("WITH RECURSIVE m(id) AS (SELECT $1::uuid UNION SELECT g.source "
                   "FROM identity_merges g JOIN m ON g.target = m.id WHERE g.valid_from <= $2 "
                   "AND (g.valid_to IS NULL OR g.valid_to > $2)) SELECT id FROM m")
            rows = await self.pool.fetch(sql, root, at)
        return [r["id"] for r in rows]

    async def patient(self, patient_id: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT patient_id, birth_date, sex, temporary, demographics, merged_into "
            "FROM patients WHERE patient_id = $1", patient_id)

    async def entries(self, root: UUID, members: Sequence[UUID], at: int | None = None, *,
                      categories: Sequence[str] | None = None,
                      results_since: datetime | None = None) -> list[Any]:
        """The entries current now (or at ledger position ``at``), each as
        (entry_id, kind, institution, resource text) with its subject the root.

        ``categories``: only entries ALL of whose categories are among these (an entry with
        a category not allowed is withheld whole). ``results_since``: lab and vital results
        only if recorded since then."""
        where, args = _entry_filter(members, at, categories, results_since)
        rows = await self.pool.fetch(
            "SELECT entry_id, kind, institution, patient_id, resource, category_mask "
            f"FROM record_entries WHERE {where} ORDER BY valid_from, entry_id", *args)
        return [_as_root(r, root) for r in rows]

    async def bundle_entries(self, root: UUID, members: Sequence[UUID], at: int | None = None,
                             *, categories: Sequence[str] | None = None,
                             results_since: datetime | None = None,
                             first: str | None = None, listed: int = 20) -> EntriesPage:
        """The same entries as ``entries``, already joined as Bundle entries (UTF-8 bytes) by
        PostgreSQL — its string functions do in C what per-row Python cost most of a read's
        time — with what the audit needs: how many, of which types and data categories, and
        the SHA-256 of their sorted "Type/id" lines (with ``first``, a line for a resource
        added in front); the lines themselves when there are at most ``listed``."""
        where, args = _entry_filter(members, at, categories, results_since)
        args += [root, first, listed]
        r, f, k = (f"${len(args) - 2}", f"${len(args) - 1}", f"${len(args)}")
        row = await self.pool.fetchrow(
            f"WITH e AS (SELECT entry_id, kind, patient_id, resource, category_mask, valid_from, "
            f"{_TYPE_OF_KIND} || '/' || entry_id AS line "
            f"FROM record_entries WHERE {where}), "
            f"l AS (SELECT line FROM e UNION ALL SELECT {f}::text WHERE {f}::text IS NOT NULL) "
            f"SELECT (SELECT count(*) FROM e) AS n, "
            f"(SELECT convert_to(string_agg('{{\"fullUrl\":\"urn:uuid:' || entry_id || "
            f"'\",\"resource\":' || CASE WHEN patient_id = {r}::uuid THEN resource ELSE "
            f"replace(resource, '\"Patient/' || patient_id || '\"', '\"Patient/' || {r}::uuid "
            f"|| '\"') END || ',\"search\":{{\"mode\":\"match\"}}}}', ',' "
            f"ORDER BY valid_from, entry_id), 'UTF8') FROM e) AS entries, "
            f"(SELECT encode(sha256(convert_to(string_agg(line, E'\\n' ORDER BY line COLLATE "
            f"\"C\"), 'UTF8')), 'hex') FROM l) AS digest, "
            f"(SELECT CASE WHEN count(*) <= {k}::int THEN array_agg(line ORDER BY line COLLATE "
            f"\"C\") END FROM l) AS lines, "
            f"(SELECT array_agg(DISTINCT split_part(line, '/', 1)) FROM l) AS types, "
            f"(SELECT bit_or(category_mask) FROM e) AS touched",
            *args)
        assert row is not None
        return EntriesPage(int(row["n"]), bytes(row["entries"] or b""), row["digest"],
                           list(row["lines"]) if row["lines"] is not None else None,
                           sorted(row["types"] or []), categories_in(row["touched"] or 0))

    async def resident_id(self, members: Sequence[UUID]) -> str | None:
        """The patient's resident ID (for an item the exchange signs on their behalf)."""
        found = await self.pool.fetchval(
            "SELECT value FROM patient_identifiers WHERE patient_id = ANY($1) AND system = $2 "
            "LIMIT 1", list(members), RESIDENT_ID_SYSTEM)
        return found if isinstance(found, str) else None

    async def history(self, entry: UUID) -> list[asyncpg.Record]:
        """Every version of one entry, oldest first, with how each ended (for auditors)."""
        return await self.pool.fetch(
            "SELECT valid_from, valid_to, ended_by, source_id, resource FROM record_entries "
            "WHERE entry_id = $1 ORDER BY valid_from", entry)


_BIT = {c: 1 << i for i, c in enumerate(CATEGORIES)}
_ALL_BITS = (1 << len(CATEGORIES)) - 1
_RESULT_BITS = _BIT["lab"] | _BIT["vital"]


def mask_of(categories: Sequence[str]) -> int:
    mask = 0
    for c in categories:
        mask |= _BIT[c]
    return mask


def categories_in(mask: int) -> list[str]:
    return [c for c in CATEGORIES if mask & _BIT[c]]


@dataclass(frozen=True)
class EntriesPage:
    count: int
    entries: bytes  # Bundle entries, comma-joined JSON
    digest: str | None  # SHA-256 (hex) of the sorted "Type/id" lines, the first one included
    lines: list[str] | None  # those lines, sorted, when there are few
    types: list[str]  # resource types disclosed
    categories: list[str]  # the data categories they hold


_TYPE_OF_KIND = "CASE kind " + " ".join(
    f"WHEN '{k}' THEN '{v}'" for k, v in RESOURCE_TYPES.items()) + " ELSE kind END"


def _entry_filter(members: Sequence[UUID], at: int | None, categories: Sequence[str] | None,
                  results_since: datetime | None) -> tuple[str, list[Any]]:
    where = ["patient_id = ANY($1)"]
    args: list[Any] = [list(members)]
    if at is None:
        where.append("valid_to IS NULL")
    else:
        args.append(at)
        where.append(f"valid_from <= ${len(args)} AND (valid_to IS NULL OR valid_to > "
                     f"${len(args)})")
    if categories is not None:  # every category of the entry among those allowed
        args.append(_ALL_BITS & ~mask_of(categories))
        where.append(f"category_mask & ${len(args)}::int = 0")
    if results_since is not None:
        args.append(results_since)
        where.append(f"(category_mask & {_RESULT_BITS} = 0 OR (SELECT c.at FROM "
                     f"ledger_clock c WHERE c.position = valid_from) >= ${len(args)})")
    return " AND ".join(where), args


def _as_root(row: asyncpg.Record, root: UUID) -> Any:
    """An entry of a merged identity is shown as the surviving patient's."""
    if row["patient_id"] == root:
        return row
    resource = row["resource"].replace(f'"Patient/{row["patient_id"]}"', f'"Patient/{root}"')
    return {"entry_id": row["entry_id"], "kind": row["kind"], "institution": row["institution"],
            "patient_id": root, "resource": resource, "category_mask": row["category_mask"]}
