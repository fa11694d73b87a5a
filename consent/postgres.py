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
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg
import orjson

from consent import research
from consent.decision import (
    BREAK_GLASS_TTL,
    DEFAULT_POLICY,
    AccessPolicy,
    BreakGlassGrant,
    CareRelationship,
    ConsentRecord,
    Facts,
    GuardianRecord,
    Reason,
    SealRecord,
    break_glass_brake,
)
from domain.identity import DEMOGRAPHICS_CONTEXT, IDENTIFIER_CONTEXT

SCHEMA = """
CREATE TABLE IF NOT EXISTS break_glass_grants (
    grant_id uuid PRIMARY KEY, person text NOT NULL, institution text NOT NULL,
    patient_id uuid NOT NULL, reason_code text NOT NULL, reason text NOT NULL,
    granted_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS break_glass_grants_patient ON break_glass_grants (patient_id, person);
"""
# Versioned steps of the gate's own tables (exchange.servers.migrations runs them): step N is
# version N; never edit a released step, add one. The read models above the ledger are not
# here: a projection rebuild makes them.
BASELINE_TABLES = ("break_glass_grants",)
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("baseline: break-glass grants", SCHEMA),
    (
        "a person's grants by time, for the break-glass rate limit",
        "CREATE INDEX IF NOT EXISTS break_glass_grants_person "
        "ON break_glass_grants (person, granted_at);",
    ),
    ("research projects the regulator registers", research.SCHEMA),
)

# The facts of one decision. {members}, {root}: the identities and the surviving one;
# {inst}: the requesting institution; {pos}: the ledger position (null: the projection's);
# {since}: the earliest recording time of an entry that still gives care; {person}: the
# requesting person (for grants); {at}: the instant.
_FACTS_COLUMNS = """
  (SELECT p FROM pos) AS position,
  (SELECT birth_date FROM patients WHERE patient_id = ANY({members}) AND birth_date IS NOT NULL
   ORDER BY (patient_id = {root}) DESC LIMIT 1) AS birth_date,
  (SELECT coalesce(json_agg(json_build_array(consent_id, consent_type, scope, purposes,
      valid_from, valid_to, categories, signed_by, guardian, position, withdrawn_position,
      institution, confirmed_position)), '[]')
   FROM consents WHERE patient_id = ANY({members})) AS consents,
  (SELECT coalesce(json_agg(json_build_array(guardian, valid_from, valid_to, position)), '[]')
   FROM guardians WHERE patient_id = ANY({members})) AS guardians,
  (SELECT coalesce(json_agg(json_build_array(readers, position, unsealed_position)), '[]')
   FROM seals WHERE patient_id = ANY({members})) AS seals,
  (SELECT coalesce(json_agg(json_build_array(kind, entry_id, recorded_at)), '[]') FROM (
     SELECT e.kind, e.entry_id, e.recorded_at FROM record_entries e
     WHERE e.patient_id = ANY({members}) AND e.institution = {inst}
       AND e.valid_from <= (SELECT p FROM pos)
       AND (e.valid_to IS NULL OR e.valid_to > (SELECT p FROM pos)) AND e.recorded_at >= {since}
     ORDER BY (e.kind = 'encounter') DESC, e.valid_from DESC LIMIT 2) x) AS records,
  (SELECT coalesce(json_agg(json_build_array(position, valid_from, valid_to)), '[]')
   FROM care_contracts WHERE patient_id = ANY({members}) AND institution = {inst}
     AND position <= (SELECT p FROM pos)) AS contracts,
  (SELECT coalesce(json_agg(json_build_array(r.referral_id, r.care_from,
      CASE WHEN (SELECT max(e.position) FROM referral_events e WHERE e.referral_id = r.referral_id
                 AND e.action IN ('complete', 'cancel', 'expire')) <= (SELECT p FROM pos)
           THEN r.care_until END)), '[]')
   FROM referrals r WHERE r.patient_id = ANY({members}) AND r.to_institution = {inst}
     AND r.care_from IS NOT NULL AND EXISTS (SELECT 1 FROM referral_events e
       WHERE e.referral_id = r.referral_id AND e.action = 'accept'
         AND e.position <= (SELECT p FROM pos))) AS referrals,
  (SELECT coalesce(json_agg(json_build_array(grant_id, person, patient_id, reason_code,
      expires_at)), '[]')
   FROM break_glass_grants WHERE patient_id = {root} AND person = {person}
     AND institution = {inst} AND granted_at <= {at}) AS grants
"""
_POS = (
    "pos AS (SELECT coalesce({pos}::bigint, (SELECT position FROM projection_position "
    "WHERE name = 'patient_record')) AS p)"
)
_FACTS = (
    "WITH "
    + _POS.format(pos="$4")
    + " SELECT "
    + _FACTS_COLUMNS.format(members="$1", root="$2", inst="$3", since="$5", person="$6", at="$7")
)
# One round trip for a read of the record now: the surviving identity of the id asked for,
# every identity merged into it, the patient's demographics (with their data-quality flags)
# and identifiers, and the facts.
# Each step of the merges looks up one identity's by index (LATERAL, OFFSET 0): joined
# instead, a planner without statistics (a table just filled) hashed every patient.
_GATE = (
    """WITH RECURSIVE up(id, depth) AS (
    SELECT patient_id, 0 FROM patients WHERE patient_id = $1
    UNION ALL SELECT p.merged_into, up.depth + 1 FROM patients p JOIN up ON p.patient_id = up.id
    WHERE p.merged_into IS NOT NULL AND up.depth < 64),
  root AS (SELECT id FROM up ORDER BY depth DESC LIMIT 1),
  m(id) AS (SELECT id FROM root UNION SELECT s.patient_id FROM m CROSS JOIN LATERAL
            (SELECT p.patient_id FROM patients p WHERE p.merged_into = m.id OFFSET 0) s),
  mem AS (SELECT array_agg(id) AS ids FROM m),
  shown AS (SELECT demographics, quality_flags FROM patients
            WHERE patient_id = ANY((SELECT ids FROM mem)::uuid[]) AND demographics IS NOT NULL
            ORDER BY position DESC LIMIT 1), """
    + _POS.format(pos="NULL")
    + """
SELECT (SELECT id FROM root) AS root, (SELECT ids FROM mem) AS members,
  (SELECT sex FROM patients WHERE patient_id = (SELECT id FROM root)) AS sex,
  (SELECT demographics FROM shown) AS demographics,
  (SELECT quality_flags FROM shown) AS quality_flags,
  (SELECT coalesce(json_agg(json_build_array(system, value_sealed) ORDER BY position), '[]')
     FROM patient_identifiers WHERE patient_id = ANY((SELECT ids FROM mem)::uuid[])) AS identifiers,
"""
    + _FACTS_COLUMNS.format(
        members="(SELECT ids FROM mem)::uuid[]",
        root="(SELECT id FROM root)",
        inst="$2",
        since="$3",
        person="$4",
        at="$5",
    )
)


@dataclass(frozen=True)
class RecordView:
    """What a read of the record now needs besides its entries, from the gate's one query."""

    root: UUID
    members: list[UUID]
    position: int
    facts: Facts
    birth_date: date | None
    sex: str | None
    demographics: dict[str, Any] | None
    identifiers: list[tuple[str, str]]
    # Where those demographics contradict their resident ID (domain.resident_id codes).
    quality_flags: tuple[str, ...] = ()


def _t(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class Opener(Protocol):
    """Opens a field the read models sealed (projections.fields.FieldCipher)."""

    def open(self, token: str, context: str) -> str: ...


class ConsentState:
    def __init__(
        self,
        pool: asyncpg.Pool,
        fields: Opener,
        *,
        care_after_record: timedelta = timedelta(days=365),
    ) -> None:
        self.pool = pool
        self.fields = fields  # the record view's identifiers and demographics are sealed
        self.care_after_record = care_after_record
        self.research = research.ResearchProjects(pool)

    async def facts(
        self,
        members: Sequence[UUID],
        root: UUID,
        *,
        institution: str,
        person: str,
        at: datetime,
        position: int | None = None,
    ) -> tuple[int, Facts]:
        """(the ledger position taken, the facts as of it) for one decision."""
        row = await self.pool.fetchrow(
            _FACTS,
            list(members),
            root,
            institution,
            position,
            at - self.care_after_record,
            person,
            at,
        )
        assert row is not None
        return int(row["position"] or 0), _facts(row, institution, self.care_after_record)

    async def view(
        self, asked: UUID, *, institution: str, person: str, at: datetime
    ) -> RecordView | None:
        """The record's gate view for a read now (None: no patient has this id)."""
        row = await self.pool.fetchrow(
            _GATE, asked, institution, at - self.care_after_record, person, at
        )
        if row is None or row["root"] is None:
            return None
        return RecordView(
            row["root"],
            list(row["members"]),
            int(row["position"] or 0),
            _facts(row, institution, self.care_after_record),
            row["birth_date"],
            row["sex"],
            orjson.loads(self.fields.open(row["demographics"], DEMOGRAPHICS_CONTEXT))
            if row["demographics"]
            else None,
            [
                (system, self.fields.open(sealed, IDENTIFIER_CONTEXT))
                for system, sealed in orjson.loads(row["identifiers"])
            ],
            tuple(row["quality_flags"] or ()),
        )

    async def consents(
        self, patient_id: UUID | Sequence[UUID], *, covering: str | None = None
    ) -> list[asyncpg.Record]:
        """The consents recorded for these identities, with their rendered resources;
        ``covering``: only those whose scope names this institution (or every member): a
        clinician sees what bears on their own reads, not what the patient agreed with others
        (nor its sensitive categories)."""
        ids = [patient_id] if isinstance(patient_id, UUID) else list(patient_id)
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT consent_id, resource, withdrawn_at, position, confirmed_position "
            "FROM consents "
            "WHERE patient_id = ANY($1) AND ($2::text IS NULL OR '*' = ANY(scope) "
            "OR $2::text = ANY(scope)) ORDER BY position",
            ids,
            covering,
        )
        return rows

    async def grant_break_glass(
        self,
        *,
        person: str,
        institution: str,
        patient_id: UUID,
        reason_code: str,
        reason: str,
        now: datetime,
        policy: AccessPolicy = DEFAULT_POLICY,
    ) -> BreakGlassGrant | Reason:
        """A grant, or why it is refused (the person's rate, ``break_glass_brake``): counted
        and granted under a lock per person, so that requests at once cannot all pass."""
        grant = BreakGlassGrant(uuid4(), person, patient_id, reason_code, now + BREAK_GLASS_TTL)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('hie-break-glass'), hashtext($1))", person
            )
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE granted_at > $2::timestamptz - interval '1 hour') AS hour, "
                "count(*) AS day FROM break_glass_grants "
                "WHERE person = $1 AND granted_at > $2::timestamptz - interval '1 day'",
                person,
                now,
            )
            assert row is not None
            if (brake := break_glass_brake(row["hour"], row["day"], policy)) is not None:
                return brake
            await conn.execute(
                "INSERT INTO break_glass_grants (grant_id, person, institution, patient_id, "
                "reason_code, reason, granted_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                grant.grant_id,
                person,
                institution,
                patient_id,
                reason_code,
                reason,
                now,
                grant.expires_at,
            )
        return grant


def _facts(row: Any, institution: str, care_after_record: timedelta) -> Facts:
    consents = [
        ConsentRecord(
            UUID(c[0]),
            c[1],
            tuple(c[2]),
            tuple(c[3]),
            _t(c[4]),  # type: ignore[arg-type]
            _t(c[5]),
            tuple(c[6]) if c[6] is not None else None,
            c[7],
            c[8],
            c[9],
            c[10],
            c[11],
            c[12],
        )
        for c in orjson.loads(row["consents"])
    ]
    guardians = [
        GuardianRecord(g[0], _t(g[1]), _t(g[2]), g[3])  # type: ignore[arg-type]
        for g in orjson.loads(row["guardians"])
    ]
    seals = [SealRecord(tuple(s[0]), s[1], s[2]) for s in orjson.loads(row["seals"])]
    care = []
    for kind, eid, recorded in orjson.loads(row["records"]):
        # Care comes from a visit the institution recorded (an encounter), not from any item
        # it filed: an observation or a consent says nothing of who treats the patient.
        if kind != "encounter":
            continue
        start = _t(recorded)
        assert start is not None
        care.append(
            CareRelationship(f"encounter:{eid}", institution, start, start + care_after_record)
        )
    care += [
        CareRelationship(f"contract:{c[0]}", institution, _t(c[1]), _t(c[2]))
        for c in orjson.loads(row["contracts"])
    ]
    care += [
        CareRelationship(f"referral:{r[0]}", institution, _t(r[1]), _t(r[2]))
        for r in orjson.loads(row["referrals"])
    ]
    grants = [
        BreakGlassGrant(UUID(g[0]), g[1], UUID(g[2]), g[3], _t(g[4]))  # type: ignore[arg-type]
        for g in orjson.loads(row["grants"])
    ]
    birth: date | None = row["birth_date"]
    return Facts(
        birth_date=birth,
        consents=consents,
        guardians=guardians,
        care=care,
        seals=seals,
        grants=grants,
    )
