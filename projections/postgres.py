"""The shared patient record in PostgreSQL (asyncpg): its read-side queries, and the names
the rest of the exchange imports from here.

The record is written by the runner (projections/runner.py) that follows the ledger, one
transaction per batch; what each ledger event writes is projections/record.py's, the tables
are projections/tables.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from domain.identity import IDENTIFIER_CONTEXT, RESIDENT_ID_SYSTEM
from projections.fields import FieldCipher
from projections.masks import ALL_BITS as _ALL_BITS
from projections.masks import CATEGORY_SYSTEM, categories_in, mask_of
from projections.masks import RESULT_BITS as _RESULT_BITS
from projections.render import RESOURCE_TYPES
from projections.runner import PatientRecordProjection
from projections.tables import LEDGER_CHANNEL, NAME, SCHEMA, TABLES, ReadLedger, create_schema

__all__ = [
    "CATEGORY_SYSTEM",
    "LEDGER_CHANNEL",
    "NAME",
    "SCHEMA",
    "TABLES",
    "EntriesPage",
    "PatientRecordProjection",
    "PatientRecordReader",
    "ReadLedger",
    "categories_in",
    "create_schema",
    "mask_of",
]


class PatientRecordReader:
    """Read-side queries over the shared patient record.

    A patient is read through its *root*: the identity it is (or was, at an earlier ledger
    position) merged into. The root's record is the entries of every identity merged into it.
    """

    def __init__(self, pool: asyncpg.Pool, fields: FieldCipher) -> None:
        self.pool = pool
        self.fields = fields

    async def find_patient(self, system: str, value: str) -> UUID | None:
        """The (current root) patient an identifier names."""
        found = await self.pool.fetchval(
            "SELECT patient_id FROM patient_identifiers WHERE system = $1 AND value_hash = $2",
            system,
            self.fields.lookup(system, value),
        )
        return await self.root(found) if isinstance(found, UUID) else None

    async def position_at(self, instant: datetime) -> int:
        """The ledger position of the last event that happened at or before ``instant`` (the
        latest in time, the latest position among events of that same instant): one step
        down the clock's time index, however long the ledger. Events are stamped as they are
        appended, so this is the last position at or before ``instant``; should two appenders'
        clocks interleave by a few milliseconds, it is the one whose time is the latest."""
        found = await self.pool.fetchval(
            "SELECT position FROM ledger_clock WHERE at <= $1 ORDER BY at DESC, position DESC "
            "LIMIT 1",
            instant,
        )
        return int(found or 0)

    async def root(self, patient_id: UUID, at: int | None = None) -> UUID | None:
        """The identity ``patient_id`` is merged into (itself if none); None if unknown."""
        if at is None:
            sql = (
                "WITH RECURSIVE up(id, depth) AS (SELECT patient_id, 0 FROM patients "
                "WHERE patient_id = $1 UNION ALL SELECT p.merged_into, up.depth + 1 "
                "FROM patients p JOIN up ON p.patient_id = up.id "
                "WHERE p.merged_into IS NOT NULL AND up.depth < 64) "
                "SELECT id FROM up ORDER BY depth DESC LIMIT 1"
            )
            found = await self.pool.fetchval(sql, patient_id)
        else:
            sql = (
                "WITH RECURSIVE up(id, depth) AS (SELECT patient_id, 0 FROM patients "
                "WHERE patient_id = $1 AND position <= $2 UNION ALL "
                "SELECT g.target, up.depth + 1 FROM identity_merges g JOIN up "
                "ON g.source = up.id WHERE g.valid_from <= $2 "
                "AND (g.valid_to IS NULL OR g.valid_to > $2) AND up.depth < 64) "
                "SELECT id FROM up ORDER BY depth DESC LIMIT 1"
            )
            found = await self.pool.fetchval(sql, patient_id, at)
        return found if isinstance(found, UUID) else None

    async def members(self, root: UUID, at: int | None = None) -> list[UUID]:
        """The root and every identity merged into it (then, at ``at``)."""
        if at is None:
            # Per identity by index, as ConsentState.view's merges (LATERAL, OFFSET 0).
            sql = (
                "WITH RECURSIVE m(id) AS (SELECT $1::uuid UNION SELECT s.patient_id FROM m "
                "CROSS JOIN LATERAL (SELECT p.patient_id FROM patients p "
                "WHERE p.merged_into = m.id OFFSET 0) s) SELECT id FROM m"
            )
            rows = await self.pool.fetch(sql, root)
        else:
            # Each step looks up the merges into one identity by its index (OFFSET 0 keeps
            # the planner from turning it into a hash of every merge ever made).
            sql = (
                "WITH RECURSIVE m(id) AS (SELECT $1::uuid UNION SELECT s.source FROM m "
                "CROSS JOIN LATERAL (SELECT g.source FROM identity_merges g "
                "WHERE g.target = m.id AND g.valid_from <= $2 "
                "AND (g.valid_to IS NULL OR g.valid_to > $2) OFFSET 0) s) SELECT id FROM m"
            )
            rows = await self.pool.fetch(sql, root, at)
        return [r["id"] for r in rows]

    async def patient(self, patient_id: UUID) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT patient_id, birth_date, sex, temporary, demographics, merged_into "
            "FROM patients WHERE patient_id = $1",
            patient_id,
        )

    async def entries(
        self,
        root: UUID,
        members: Sequence[UUID],
        at: int | None = None,
        *,
        categories: Sequence[str] | None = None,
        results_since: datetime | None = None,
    ) -> list[Any]:
        """The entries current now (or at ledger position ``at``), each as
        (entry_id, kind, institution, resource text) with its subject the root.

        ``categories``: only entries ALL of whose categories are among these (an entry with
        a category not allowed is withheld whole). ``results_since``: lab and vital results
        only if recorded since then. At a position, what was later retracted as entered in
        error is left out."""
        where, args = _entry_filter(members, at, categories, results_since, at is not None)
        rows = await self.pool.fetch(
            "SELECT entry_id, kind, institution, patient_id, resource, category_mask "
            f"FROM record_entries WHERE {where} ORDER BY valid_from, entry_id",
            *args,
        )
        return [_as_root(r, root) for r in rows]

    async def bundle_entries(
        self,
        root: UUID,
        members: Sequence[UUID],
        at: int | None = None,
        *,
        categories: Sequence[str] | None = None,
        results_since: datetime | None = None,
        first: str | None = None,
        as_it_stood: bool = False,
    ) -> EntriesPage:
        """The same entries as ``entries``, already joined as Bundle entries (UTF-8 bytes) by
        PostgreSQL — its string functions do in C what per-row Python cost most of a read's
        time — with what the audit needs: how many, the data categories they hold, and their
        "Type/id" lines, sorted (with ``first``, a line for a resource added in front).

        The lines are sorted here and counted, typed and digested by the disclosure rule's
        one owner (``audit.disclosure``), not by PostgreSQL: three sorted aggregates over the
        same rows cost the database more than joining the whole Bundle, and its CPU is the
        read path's limit. ``as_it_stood``: a reader asked for the record as it stood at a past
        instant, which leaves out what was retracted as entered in error since."""
        where, args = _entry_filter(members, at, categories, results_since, as_it_stood)
        args.append(root)
        r = f"${len(args)}"
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, "
            f'convert_to(string_agg(\'{{"fullUrl":"urn:uuid:\' || entry_id || '
            f'\'","resource":\' || CASE WHEN patient_id = {r}::uuid THEN resource ELSE '
            f"replace(resource, '\"Patient/' || patient_id || '\"', '\"Patient/' || {r}::uuid "
            f'|| \'"\') END || \',"search":{{"mode":"match"}}}}\', \',\' '
            "ORDER BY valid_from, entry_id), 'UTF8') AS entries, "
            f"array_agg({_TYPE_OF_KIND} || '/' || entry_id) AS lines, "
            f"bit_or(category_mask) AS touched FROM record_entries WHERE {where}",
            *args,
        )
        assert row is not None
        lines: list[str] = list(row["lines"] or [])
        if first is not None:
            lines.append(first)
        lines.sort()  # code-point order: PostgreSQL's COLLATE "C" on UTF-8 text
        return EntriesPage(
            int(row["n"]),
            bytes(row["entries"] or b""),
            lines,
            categories_in(row["touched"] or 0),
        )

    async def resident_id(self, members: Sequence[UUID]) -> str | None:
        """The patient's resident ID (for an item the exchange signs on their behalf)."""
        found = await self.pool.fetchval(
            "SELECT value_sealed FROM patient_identifiers WHERE patient_id = ANY($1) "
            "AND system = $2 LIMIT 1",
            list(members),
            RESIDENT_ID_SYSTEM,
        )
        return self.fields.open(found, IDENTIFIER_CONTEXT) if isinstance(found, str) else None

    async def active_seals(
        self, members: Sequence[UUID] | None = None, limit: int = 500
    ) -> list[asyncpg.Record]:
        """Seals in force (of these identities; None: the county's, for the regulator)."""
        if members is None:
            return list(
                await self.pool.fetch(
                    "SELECT patient_id, institution, readers, reason, sealed_at, position "
                    "FROM seals WHERE unsealed_position IS NULL ORDER BY sealed_at LIMIT $1",
                    limit,
                )
            )
        return list(
            await self.pool.fetch(
                "SELECT patient_id, institution, readers, reason, sealed_at, position "
                "FROM seals WHERE patient_id = ANY($1) AND unsealed_position IS NULL",
                list(members),
            )
        )

    async def institutions(self) -> dict[str, tuple[str, str]]:
        """Every registered institution's name and level by its code (a county has tens: the
        pages badge each timeline row with them)."""
        rows = await self.pool.fetch("SELECT code, name, level FROM institutions")
        return {r["code"]: (r["name"], r["level"]) for r in rows}

    async def history(self, institution: str, record: str) -> list[asyncpg.Record]:
        """Every version of one institution's record, oldest first, with how each ended (for
        auditors)."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT valid_from, valid_to, ended_by, source_id, resource FROM record_entries "
            "WHERE institution = $1 AND record = $2 ORDER BY valid_from",
            institution,
            record,
        )
        return rows


@dataclass(frozen=True)
class EntriesPage:
    count: int
    entries: bytes  # Bundle entries, comma-joined JSON
    lines: list[str]  # their "Type/id" lines, sorted, the first one's included
    categories: list[str]  # the data categories they hold


_TYPE_OF_KIND = (
    "CASE kind "
    + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in RESOURCE_TYPES.items())
    + " ELSE kind END"
)


def _entry_filter(
    members: Sequence[UUID],
    at: int | None,
    categories: Sequence[str] | None,
    results_since: datetime | None,
    as_it_stood: bool = False,
) -> tuple[str, list[Any]]:
    where = ["patient_id = ANY($1)"]
    args: list[Any] = [list(members)]
    if at is None:
        where.append("valid_to IS NULL")
    else:
        args.append(at)
        where.append(
            f"valid_from <= ${len(args)} AND (valid_to IS NULL OR valid_to > ${len(args)})"
        )
    if as_it_stood:
        # The record as it stood then, less what was later retracted as entered in error
        # (often filed on the wrong patient): no clinician or patient sees it again; auditors
        # see every version through the entry's history.
        where.append(
            "NOT EXISTS (SELECT 1 FROM record_entries x WHERE x.institution = "
            "record_entries.institution AND x.record = record_entries.record "
            "AND x.ended_by = 'retracted' AND x.valid_to > record_entries.valid_from)"
        )
    if categories is not None:  # every category of the entry among those allowed
        args.append(_ALL_BITS & ~mask_of(categories))
        where.append(f"category_mask & ${len(args)}::int = 0")
    if results_since is not None:
        args.append(results_since)
        where.append(f"(category_mask & {_RESULT_BITS} = 0 OR recorded_at >= ${len(args)})")
    return " AND ".join(where), args


def _as_root(row: asyncpg.Record, root: UUID) -> Any:
    """An entry of a merged identity is shown as the surviving patient's."""
    if row["patient_id"] == root:
        return row
    resource = row["resource"].replace(f'"Patient/{row["patient_id"]}"', f'"Patient/{root}"')
    return {
        "entry_id": row["entry_id"],
        "kind": row["kind"],
        "institution": row["institution"],
        "patient_id": root,
        "resource": resource,
        "category_mask": row["category_mask"],
    }
