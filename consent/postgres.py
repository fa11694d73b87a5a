"""The facts a decision needs, from the read models, in one round trip; and break-glass grants
(the gate's own state, kept in PostgreSQL).

Everything the ledger says is taken *as of a ledger position* (the projection's, at the time
of a request; a recorded one, to decide a past request again): consents recorded by then and
not withdrawn by then, guardians and contracts recorded by then, seals in force then, entries
current then, referrals accepted (and closed) by then. Times (validity periods, care windows)
are compared with the request's instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson

from consent.decision import (
    BREAK_GLASS_TTL,
    BreakGlassGrant,
    CareRelationship,
    ConsentRecord,
    Facts,
    GuardianRecord,
    SealRecord,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS break_glass_grants (
    grant_id uuid PRIMARY KEY, person text NOT NULL, institution text NOT NULL,
    patient_id uuid NOT NULL, reason_code text NOT NULL, reason text NOT NULL,
    granted_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS break_glass_grants_patient ON break_glass_grants (patient_id, person);
"""

# $1 members, $2 root, $3 institution, $4 position (null: the projection's), $5 earliest
# recording time of an entry that still gives care, $6 person (for grants), $7 the instant.
_FACTS = """
WITH pos AS (SELECT coalesce($4::bigint, (SELECT position FROM projection_position
                                          WHERE name = 'patient_record')) AS p)
SELECT (SELECT p FROM pos) AS position,
  (SELECT birth_date FROM patients WHERE patient_id = $2) AS birth_date,
  (SELECT coalesce(json_agg(json_build_array(consent_id, consent_type, scope, purposes,
      valid_from, valid_to, categories, signed_by, guardian, position, withdrawn_position)), '[]')
   FROM consents WHERE patient_id = ANY($1)) AS consents,
  (SELECT coalesce(json_agg(json_build_array(guardian, valid_from, valid_to, position)), '[]')
   FROM guardians WHERE patient_id = ANY($1)) AS guardians,
  (SELECT coalesce(json_agg(json_build_array(readers, position, unsealed_position)), '[]')
   FROM seals WHERE patient_id = ANY($1)) AS seals,
  (SELECT coalesce(json_agg(json_build_array(kind, entry_id, at)), '[]') FROM (
     SELECT e.kind, e.entry_id, c.at FROM record_entries e
     JOIN ledger_clock c ON c.position = e.valid_from
     WHERE e.patient_id = ANY($1) AND e.institution = $3 AND e.valid_from <= (SELECT p FROM pos)
       AND (e.valid_to IS NULL OR e.valid_to > (SELECT p FROM pos)) AND c.at >= $5
     ORDER BY (e.kind = 'encounter') DESC, e.valid_from DESC LIMIT 2) x) AS records,
  (SELECT coalesce(json_agg(json_build_array(position, valid_from, valid_to)), '[]')
   FROM care_contracts WHERE patient_id = ANY($1) AND institution = $3
     AND position <= (SELECT p FROM pos)) AS contracts,
  (SELECT coalesce(json_agg(json_build_array(r.referral_id, r.care_from,
      CASE WHEN (SELECT max(e.position) FROM referral_events e WHERE e.referral_id = r.referral_id
                 AND e.action IN ('complete', 'cancel', 'expire')) <= (SELECT p FROM pos)
           THEN r.care_until END)), '[]')
   FROM referrals r WHERE r.patient_id = ANY($1) AND r.to_institution = $3
     AND r.care_from IS NOT NULL AND EXISTS (SELECT 1 FROM referral_events e
       WHERE e.referral_id = r.referral_id AND e.action = 'accept'
         AND e.position <= (SELECT p FROM pos))) AS referrals,
  (SELECT coalesce(json_agg(json_build_array(grant_id, person, patient_id, reason_code,
      expires_at)), '[]')
   FROM break_glass_grants WHERE patient_id = $2 AND person = $6
     AND granted_at <= $7) AS grants
"""


def _t(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class ConsentState:
    def __init__(self, pool: asyncpg.Pool, *,
                 care_after_record: timedelta = timedelta(days=365)) -> None:
        self.pool = pool
        self.care_after_record = care_after_record

    async def create_schema(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hie-consent-schema'))")
            await conn.execute(SCHEMA)

    async def facts(self, members: Sequence[UUID], root: UUID, *, institution: str,
                    person: str, at: datetime,
                    position: int | None = None) -> tuple[int, Facts]:
        """(the ledger position taken, the facts as of it) for one decision."""
        row = await self.pool.fetchrow(_FACTS, list(members), root, institution, position,
                                       at - self.care_after_record, person, at)
        assert row is not None
        return int(row["position"] or 0), _facts(row, institution, self.care_after_record)

    async def consents(self, patient_id: UUID | Sequence[UUID]) -> list[asyncpg.Record]:
        """The consents recorded for these identities, with their rendered resources."""
        ids = [patient_id] if isinstance(patient_id, UUID) else list(patient_id)
        return await self.pool.fetch(
            "SELECT consent_id, resource, withdrawn_at, position FROM consents "
            "WHERE patient_id = ANY($1) ORDER BY position", ids)

    async def grant_break_glass(self, *, person: str, institution: str, patient_id: UUID,
                                reason_code: str, reason: str, now: datetime) -> BreakGlassGrant:
        grant = BreakGlassGrant(uuid4(), person, patient_id, reason_code, now + BREAK_GLASS_TTL)
        await self.pool.execute(
            "INSERT INTO break_glass_grants (grant_id, person, institution, patient_id, "
            "reason_code, reason, granted_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            grant.grant_id, person, institution, patient_id, reason_code, reason, now,
            grant.expires_at)
        return grant


def _facts(row: Any, institution: str, care_after_record: timedelta) -> Facts:
    consents = [ConsentRecord(
        UUID(c[0]), c[1], tuple(c[2]), tuple(c[3]), _t(c[4]), _t(c[5]),  # type: ignore[arg-type]
        tuple(c[6]) if c[6] is not None else None, c[7], c[8], c[9], c[10])
        for c in orjson.loads(row["consents"])]
    guardians = [GuardianRecord(g[0], _t(g[1]), _t(g[2]), g[3])  # type: ignore[arg-type]
                 for g in orjson.loads(row["guardians"])]
    seals = [SealRecord(tuple(s[0]), s[1], s[2]) for s in orjson.loads(row["seals"])]
    care = []
    for kind, eid, recorded in orjson.loads(row["records"]):
        start = _t(recorded)
        assert start is not None
        care.append(CareRelationship(f"{'encounter' if kind == 'encounter' else 'record'}:{eid}",
                                     institution, start, start + care_after_record))
    care += [CareRelationship(f"contract:{c[0]}", institution, _t(c[1]), _t(c[2]))
             for c in orjson.loads(row["contracts"])]
    care += [CareRelationship(f"referral:{r[0]}", institution, _t(r[1]), _t(r[2]))
             for r in orjson.loads(row["referrals"])]
    grants = [BreakGlassGrant(UUID(g[0]), g[1], UUID(g[2]), g[3], _t(g[4]))  # type: ignore[arg-type]
              for g in orjson.loads(row["grants"])]
    birth: date | None = row["birth_date"]
    return Facts(birth_date=birth, consents=consents, guardians=guardians, care=care,
                 seals=seals, grants=grants)
