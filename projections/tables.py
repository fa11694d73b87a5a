"""The patient record's tables in PostgreSQL and the projection's tracked position.

Every table here is rebuilt from the ledger (``hie projections rebuild`` truncates ``TABLES``
and replays), so the DDL is idempotent ``CREATE … IF NOT EXISTS`` rather than versioned; a
change of shape that adding a column cannot make is a new ``SHAPE``, and a database of
another shape has its read models made again and replayed.
``record_entries`` is keyed by patient first, (patient_id, entry_id, valid_from): a patient's
entries arrive together and are read together, so a batch's inserts fill a few leaves
instead of touching one leaf per entry at random (an entry id is a hash). Keyed by entry id,
at 10M entries the key's leaves outgrew the cache and every insert dirtied a different one:
a full-page image in the WAL for each after every checkpoint, 70% of ingest's WAL. Ending a
version finds it by ``(institution, record)`` (the entry id is a hash of the two), whose
values a member's system gives in its own order, not at random. Only an entry that may
continue a record probes that index (projections/batch.py): probing it for every entry, as
the first version of this key did, made the lag p99 at 5,000 events/s while autovacuum ran
0.37–0.56 s against 0.09–0.21 s on the entry-id key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from domain.categories import SENSITIVE
from projections import intake, merge_requests, referrals

NAME = "patient_record"
# The ledger NOTIFYs this channel in each commit that appends: a runner that has caught up
# wakes on it rather than on its next poll (the poll stays, should the LISTEN connection die).
LEDGER_CHANNEL = "hie_ledger"

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS projection_position (
    name text PRIMARY KEY, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_clock (
    position bigint PRIMARY KEY, at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_clock_at ON ledger_clock (at);
CREATE TABLE IF NOT EXISTS institutions (
    code text PRIMARY KEY, name text NOT NULL, level text NOT NULL, position bigint NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    patient_id uuid PRIMARY KEY, birth_date date, sex text, temporary boolean NOT NULL,
    merged_into uuid, demographics text, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS patients_merged_into ON patients (merged_into);
-- Where the demographics last sent contradict their resident ID (domain.resident_id
-- discrepancies): codes, null for none.
ALTER TABLE patients ADD COLUMN IF NOT EXISTS quality_flags text[];
CREATE TABLE IF NOT EXISTS identity_merges (
    source uuid NOT NULL, target uuid NOT NULL, valid_from bigint NOT NULL, valid_to bigint,
    PRIMARY KEY (source, valid_from));
CREATE INDEX IF NOT EXISTS identity_merges_target ON identity_merges (target);
CREATE TABLE IF NOT EXISTS patient_identifiers (
    system text NOT NULL, value_hash bytea NOT NULL, value_sealed text NOT NULL,
    patient_id uuid NOT NULL, institution text, position bigint NOT NULL,
    PRIMARY KEY (system, value_hash));
CREATE INDEX IF NOT EXISTS patient_identifiers_patient ON patient_identifiers (patient_id);
CREATE TABLE IF NOT EXISTS record_entries (
    entry_id uuid NOT NULL, patient_id uuid NOT NULL, institution text NOT NULL,
    record text NOT NULL, source_id text NOT NULL, kind text NOT NULL,
    submission_id text NOT NULL, resource text NOT NULL, valid_from bigint NOT NULL,
    valid_to bigint, ended_by text, PRIMARY KEY (patient_id, entry_id, valid_from));
CREATE INDEX IF NOT EXISTS record_entries_record
    ON record_entries (institution, record, valid_from);
-- The records an entry named apart from its own source id (projections/batch.py).
CREATE TABLE IF NOT EXISTS named_records (
    institution text NOT NULL, record text NOT NULL, PRIMARY KEY (institution, record));
CREATE TABLE IF NOT EXISTS consents (
    consent_id uuid PRIMARY KEY, patient_id uuid NOT NULL, institution text NOT NULL,
    consent_type text NOT NULL, scope text[] NOT NULL, purposes text[] NOT NULL,
    valid_from timestamptz NOT NULL, valid_to timestamptz, signed_by text NOT NULL,
    resource text NOT NULL, position bigint NOT NULL);
CREATE INDEX IF NOT EXISTS consents_patient ON consents (patient_id);
ALTER TABLE record_entries ADD COLUMN IF NOT EXISTS category_mask integer;
-- When the entry's version was recorded (its ledger event's time): the gate reads it with the
-- row instead of joining the ledger clock, whose whole table a generic plan would hash.
ALTER TABLE record_entries ADD COLUMN IF NOT EXISTS recorded_at timestamptz;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS categories text[];
ALTER TABLE consents ADD COLUMN IF NOT EXISTS guardian text;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS source_id text;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS withdrawn_position bigint;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS withdrawn_at timestamptz;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS document_sha256 text;
ALTER TABLE consents ADD COLUMN IF NOT EXISTS signing_method text;
-- From which ledger position the consent counts in full (null: it reaches beyond its
-- institution and waits for the patient's confirmation or its signed form).
ALTER TABLE consents ADD COLUMN IF NOT EXISTS confirmed_position bigint;
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
CREATE INDEX IF NOT EXISTS seals_active ON seals (sealed_at) WHERE unsealed_position IS NULL;
"""
    + referrals.SCHEMA
    + merge_requests.SCHEMA
    + intake.SCHEMA
)

TABLES = (
    "ledger_clock",
    "institutions",
    "patients",
    "identity_merges",
    "patient_identifiers",
    "record_entries",
    "named_records",
    "consents",
    "guardians",
    "care_contracts",
    "seals",
    *referrals.TABLES,
    *merge_requests.TABLES,
    *intake.TABLES,
)

ReadLedger = Callable[[int, int], Awaitable[Sequence[tuple[int, Any]]]]


# Columns added to a live database are filled in once, in the transaction that adds them, so
# no rebuild is needed and later starts skip it. ``recorded_at``: from the ledger clock.
_HAS_COLUMN = (
    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
    "AND attname = $2 AND NOT attisdropped)"
)
_BACKFILL_RECORDED_AT = (
    "UPDATE record_entries e SET recorded_at = c.at FROM ledger_clock c "
    "WHERE c.position = e.valid_from AND e.recorded_at IS NULL"
)
# ``confirmed_position``: a consent recorded before the patient had to confirm broad ones
# counts in full from its own position if it opens nothing beyond its institution's care, or
# the patient gave it in the portal (domain.consent_items.needs_patient, in SQL).
_BACKFILL_CONFIRMED = (
    "UPDATE consents c SET confirmed_position = c.position WHERE confirmed_position IS NULL "
    "AND (EXISTS (SELECT 1 FROM institutions i WHERE i.code = c.institution "
    "AND i.level = 'patient_portal') OR NOT (EXISTS (SELECT 1 FROM unnest(c.scope) x "
    "WHERE x <> c.institution) OR coalesce(c.categories && $1::text[], false) "
    "OR 'HRESCH' = ANY(c.purposes)))"
)


# The read models' shape. A change that adding a column cannot make (a key, a column's type)
# raises it: a database built to another shape has its read models dropped and made again at
# the next start, and the runner replays the ledger into them (as ``hie projections rebuild``
# would). 2: direct identifiers sealed or kept as keyed hashes (projections/fields.py).
# 3: record_entries keyed by patient first, found by (institution, record) to be ended;
# named_records. 4: patients.quality_flags; adding the column cannot fill it (the comparison
# needs the sealed demographics and resident IDs, and is Python's), the replay does.
# 5: intake_days and intake_kinds (projections/intake.py), counted from every submission.
SHAPE = 5
_SHAPE = "CREATE TABLE IF NOT EXISTS projection_shape (shape integer NOT NULL)"


async def create_schema(pool: asyncpg.Pool) -> bool:
    """Make the read models (True: they were dropped, built to another shape, and wait for
    the replay)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-projection-schema'))")
        await conn.execute(_SHAPE)
        built = await conn.fetchval("SELECT to_regclass('patients') IS NOT NULL")
        shape = await conn.fetchval("SELECT max(shape) FROM projection_shape")
        replay = bool(built and shape != SHAPE)
        if replay:
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")
            await conn.execute("UPDATE projection_position SET position = 0 WHERE name = $1", NAME)
        await conn.execute("DELETE FROM projection_shape")
        await conn.execute("INSERT INTO projection_shape VALUES ($1)", SHAPE)
        had_recorded_at = await conn.fetchval(_HAS_COLUMN, "record_entries", "recorded_at")
        had_confirmed = await conn.fetchval(_HAS_COLUMN, "consents", "confirmed_position")
        await conn.execute(SCHEMA)
        if not had_recorded_at:
            await conn.execute(_BACKFILL_RECORDED_AT)
        if not had_confirmed:
            await conn.execute(_BACKFILL_CONFIRMED, list(SENSITIVE))
        await conn.execute(
            "INSERT INTO projection_position (name, position) VALUES ($1, 0) "
            "ON CONFLICT (name) DO NOTHING",
            NAME,
        )
    return replay
