"""A county's worth of rows beside the few real patients a plan test reads: every table that
grows with the county filled directly with SQL (synthetic ids from md5, no person in them),
then ANALYZEd, so that a plan reading one of them in full shows. Not collected as tests.

Seeded rows keep out of the real ones' way: ledger positions, audit sequence numbers and tree
indices are negative, patients and entries have ids of their own, institutions are the real ones.
"""

from __future__ import annotations

import asyncpg

from domain.identity import DEMOGRAPHICS_CONTEXT, IDENTIFIER_CONTEXT
from projections.fields import FieldCipher

PATIENTS = 20_000
ENTRIES = 300_000
# Patients with a long record (~300 entries each, as a county's chronic patients have).
ENTRY_PATIENTS = 1_000
CLOCK = 60_000
REFERRALS = 20_000
AUDIT = 100_000
DAYS = 3650  # of submissions counted (projections/intake.py)

_PID = "md5('seed-p' || {i})::uuid"
# The consortium's own institutions (tests' consortium()): a county has a handful.
_INST = "(ARRAY['thc-east', 'county', 'vc-peach', 'seed-thc'])[({i}) % 4 + 1]"

SEED = [
    f"""INSERT INTO ledger_clock (position, at)
    SELECT -i, now() - interval '1 day' - i * interval '7 minutes'
    FROM generate_series(1, {CLOCK}) i""",
    f"""INSERT INTO patients (patient_id, birth_date, sex, temporary, merged_into, demographics,
        position)
    SELECT {_PID.format(i="i")}, date '1940-01-01' + (i % 25000), 'female', false,
        CASE WHEN i % 10 = 0 AND i % 100 <> 0 THEN {_PID.format(i="i - 1")} END, '{{demographics}}', -i
    FROM generate_series(1, {PATIENTS}) i""",
    f"""INSERT INTO identity_merges (source, target, valid_from, valid_to)
    SELECT {_PID.format(i="i")}, {_PID.format(i="i - 1")}, -i, CASE WHEN i % 100 = 0 THEN -1 END
    FROM generate_series(10, {PATIENTS}, 10) i""",
    f"""INSERT INTO patient_identifiers (system, value_hash, value_sealed, patient_id,
        institution, position)
    SELECT s, sha256((s || '-' || i)::bytea), '{{identifier}}', {_PID.format(i="i")},
        {_INST.format(i="i")}, -i
    FROM generate_series(1, {PATIENTS}) i, (VALUES ('urn:seed:resident'), ('urn:seed:mrn')) v(s)""",
    f"""INSERT INTO record_entries (entry_id, patient_id, institution, record, source_id, kind,
        submission_id, resource, valid_from, valid_to, ended_by, category_mask, recorded_at)
    SELECT md5('seed-e' || i)::uuid, {_PID.format(i=f"(i % {ENTRY_PATIENTS}) + 1")},
        {_INST.format(i="i")}, 'r' || i, 's' || i,
        (ARRAY['encounter', 'condition', 'observation', 'medication_request'])[i % 4 + 1],
        'sub-' || (i / 50), '{{"resourceType": "Observation"}}', -(i % {CLOCK}) - 1,
        CASE WHEN i % 10 = 0 THEN -(i % {CLOCK}) END, CASE WHEN i % 10 = 0 THEN 'superseded' END,
        i % 64, now() - interval '1 day' - ((i % {CLOCK}) + 1) * interval '7 minutes'
    FROM generate_series(1, {ENTRIES}) i""",
    f"""INSERT INTO consents (consent_id, patient_id, institution, consent_type, scope, purposes,
        valid_from, valid_to, signed_by, resource, position, categories, source_id,
        confirmed_position)
    SELECT md5('seed-c' || i)::uuid, {_PID.format(i="i")}, {_INST.format(i="i")}, 'separate',
        ARRAY['*'], ARRAY['TREAT'], timestamptz '2024-01-01', NULL, 'patient',
        '{{"resourceType": "Consent"}}', -i, NULL, 'c' || i, CASE WHEN i % 3 > 0 THEN -i END
    FROM generate_series(1, {PATIENTS}) i""",
    # Merge requests: most decided long ago, one in fifty still waiting for the steward.
    f"""INSERT INTO merge_requests (request_id, reference, institution, survivor, merged,
        status, requested_at, position, steward, decided_at)
    SELECT md5('seed-m' || i)::uuid, 'seed/m' || i, {_INST.format(i="i")},
        {_PID.format(i="i")}, {_PID.format(i=f"(i + 7) % {PATIENTS} + 1")},
        CASE WHEN i % 50 = 0 THEN 'pending' ELSE 'approved' END,
        timestamptz '2024-01-01' + i * interval '1 hour', -i,
        CASE WHEN i % 50 = 0 THEN NULL ELSE 'seed-steward' END,
        CASE WHEN i % 50 = 0 THEN NULL ELSE timestamptz '2024-02-01' END
    FROM generate_series(1, {PATIENTS} / 4) i""",
    f"""INSERT INTO guardians (patient_id, guardian, relationship, institution, valid_from,
        valid_to, position)
    SELECT {_PID.format(i="i")}, 'g' || i, 'parent', {_INST.format(i="i")},
        timestamptz '2024-01-01', NULL, -i
    FROM generate_series(1, {PATIENTS}, 10) i""",
    f"""INSERT INTO care_contracts (patient_id, institution, doctor, valid_from, valid_to,
        position)
    SELECT {_PID.format(i="i")}, {_INST.format(i="i")}, 'dr-' || (i % 40),
        timestamptz '2024-01-01', timestamptz '2030-01-01', -i
    FROM generate_series(1, {PATIENTS}, 4) i""",
    f"""INSERT INTO seals (patient_id, institution, readers, reason, sealed_at, position)
    SELECT {_PID.format(i="i")}, {_INST.format(i="i")}, ARRAY['seed-0'], 'seed',
        timestamptz '2024-01-01', -i
    FROM generate_series(1, {PATIENTS}, 20) i""",
    # Most seals were lifted long ago; one in ten is still in force.
    """UPDATE seals SET unsealed_position = position + 1, unsealed_at = timestamptz '2024-06-01'
    WHERE position < 0 AND position % 200 <> 0""",
    f"""INSERT INTO referrals (referral_id, reference, patient_id, direction, from_institution,
        to_institution, urgency, status, content, requested_at, accepted_at, care_from,
        deadline, position, updated)
    SELECT md5('seed-r' || i)::uuid, 'SEED-' || i, {_PID.format(i=f"(i % {PATIENTS}) + 1")},
        'up', {_INST.format(i="i")}, {_INST.format(i="i + 1")}, 'routine',
        (ARRAY['requested', 'accepted', 'completed'])[i % 3 + 1], '{{}}',
        timestamptz '2024-01-01' + i * interval '20 minutes',
        timestamptz '2024-01-01' + i * interval '20 minutes',
        timestamptz '2024-01-01' + i * interval '20 minutes',
        CASE WHEN i % 3 = 0 THEN timestamptz '2030-01-01' END, -i, -i
    FROM generate_series(1, {REFERRALS}) i""",
    f"""INSERT INTO referral_events (referral_id, version, action, status, institution, at,
        details, position)
    SELECT md5('seed-r' || i)::uuid, v, (ARRAY['request', 'accept', 'complete'])[v],
        'accepted', {_INST.format(i="i")}, timestamptz '2024-01-01', '{{}}', -i * 3 - v
    FROM generate_series(1, {REFERRALS}) i, generate_series(1, 3) v""",
    f"""INSERT INTO break_glass_grants (grant_id, person, institution, patient_id, reason_code,
        reason, granted_at, expires_at)
    SELECT md5('seed-g' || i)::uuid, 'seed-dr-' || (i % 200), {_INST.format(i="i")},
        {_PID.format(i="i")}, 'unconscious', 'seed', timestamptz '2024-01-01',
        timestamptz '2024-01-02'
    FROM generate_series(1, {PATIENTS}, 4) i""",
    """INSERT INTO research_projects (code, title, ethics_approval, institutions, categories,
        starts, ends, salt, registered_by, registered_at)
    SELECT 'SEED-' || i, 'seed', 'seed', ARRAY['county'], ARRAY['lab'],
        timestamptz '2020-01-01', timestamptz '2021-01-01', '\\x00', 'seed',
        timestamptz '2020-01-01'
    FROM generate_series(1, 2000) i""",
    """INSERT INTO revoked_tokens (token_id, revoked_at, reason)
    SELECT 'seed-t' || i, timestamptz '2024-01-01' + i * interval '1 hour', 'seed'
    FROM generate_series(1, 5000) i""",
    """INSERT INTO revoked_persons (person, before)
    SELECT 'seed-dr-' || i, timestamptz '2024-01-01' + i * interval '1 hour'
    FROM generate_series(1, 1000) i""",
    f"""INSERT INTO audit_log (seq, recorded_at, patient_id, person, institution, action,
        decision, purpose, break_glass, record_text, leaf_hash, chain_hash)
    SELECT -i, now() - i * interval '2 seconds',
        {_PID.format(i=f"(i % {PATIENTS}) + 1")}, 'seed-dr-' || (i % 200), {_INST.format(i="i")},
        CASE i % 500 WHEN 0 THEN 'break-glass' WHEN 1 THEN 'break-glass.review'
            ELSE (ARRAY['read', 'lookup', 'consents'])[i % 3 + 1] END,
        CASE WHEN i % 5 = 0 THEN 'deny' ELSE 'permit' END, 'TREAT', i % 4 = 2,
        json_build_object('seq', -i, 'action', 'seed', 'alert', NULL, 'person', 'seed-dr-1',
            'reviewed_seq', CASE WHEN i % 500 = 1 THEN 1 - i END,
            'recorded_at', now() - i * interval '2 seconds')::text,
        '\\x00', '\\x00'
    FROM generate_series(1, {AUDIT}) i""",
    # One seeded read in ten touched three patients at once (an inbox, a search).
    f"""INSERT INTO audit_patients (patient_id, seq)
    SELECT {_PID.format(i=f"((i + k * 7919) % {PATIENTS}) + 1")}, -i
    FROM generate_series(10, {AUDIT}, 10) i, generate_series(0, 2) k""",
    f"""INSERT INTO audit_nodes (level, idx, hash)
    SELECT l, -i, '\\x00' FROM generate_series(1, {AUDIT} / 2) i, generate_series(0, 1) l""",
    # Ten years of what every institution sent, day by day and kind by kind, before the days
    # the test itself sends in; refusals, one an hour over the same years.
    f"""INSERT INTO intake_days (day, institution, submissions, items, last_at)
    SELECT current_date - 30 - d, {_INST.format(i="k")}, 40, 400,
        (current_date - 30 - d) + time '17:00'
    FROM generate_series(0, {DAYS}) d, generate_series(0, 3) k""",
    f"""INSERT INTO intake_kinds (day, institution, kind, items)
    SELECT current_date - 30 - d, {_INST.format(i="k")},
        (ARRAY['encounter', 'condition', 'observation', 'medication_request', 'patient'])[j], 80
    FROM generate_series(0, {DAYS}) d, generate_series(0, 3) k, generate_series(1, 5) j""",
    f"""INSERT INTO ledger_rejected_submissions (submission, institution, submission_id,
        rejected_at, codes)
    SELECT md5('seed-x' || i)::uuid, {_INST.format(i="i")}, 'seed-x' || i,
        now() - interval '30 days' - i * interval '1 hour', ARRAY['item.invalid']
    FROM generate_series(1, {DAYS} * 24) i""",
    """INSERT INTO audit_heads (size, root, note, signed_at)
    SELECT -i, '\\x00', 'seed', timestamptz '2024-01-01' + i * interval '1 minute'
    FROM generate_series(1, 5000) i""",
]


async def no_statistics(pool: asyncpg.Pool) -> None:
    """Keep autovacuum from analyzing this database's tables: their statistics are what the
    test says they are (none until ``seed_county(..., analyze=True)``)."""
    tables = await pool.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
    )
    for t in tables:
        await pool.execute(f'ALTER TABLE "{t[0]}" SET (autovacuum_enabled = false)')


async def seed_county(pool: asyncpg.Pool, fields: FieldCipher) -> None:
    """Fill the growing tables (in one go, as a projection catching up does); the sealed
    fields hold one synthetic value sealed with the exchange's key, so reads can open them."""
    sealed = {
        "demographics": fields.seal('{"name": "种子", "gender": "female"}', DEMOGRAPHICS_CONTEXT),
        "identifier": fields.seal("SEED-0", IDENTIFIER_CONTEXT),
    }
    async with pool.acquire() as conn, conn.transaction():
        for statement in SEED:
            for name, token in sealed.items():
                statement = statement.replace("{" + name + "}", token)
            await conn.execute(statement)
