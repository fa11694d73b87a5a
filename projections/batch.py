"""One batch of ledger events as the rows it writes, sent to PostgreSQL in a few round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from projections import copy_binary as pg
from projections.intake import Intake

ENTRY_COLUMNS = (
    "entry_id",
    "patient_id",
    "institution",
    "record",
    "source_id",
    "kind",
    "submission_id",
    "resource",
    "valid_from",
    "valid_to",
    "ended_by",
    "category_mask",
    "recorded_at",
)
# The columns' types, for rows sent in COPY's binary format (``Changes.encode_rows``).
ENTRY_TYPES: tuple[pg.Encoder, ...] = (
    pg.uuid,
    pg.uuid,
    *[pg.text] * 6,
    pg.bigint,
    pg.bigint,
    pg.text,
    pg.integer,
    pg.timestamptz,
)
CLOCK_COLUMNS = ("position", "at")
CLOCK_TYPES: tuple[pg.Encoder, ...] = (pg.bigint, pg.timestamptz)


@dataclass
class Changes:
    """One batch's writes, gathered so that they go to PostgreSQL in a few round trips.

    ``inserts`` are new patients and identifiers: nothing earlier in a batch depends on them,
    so they go first, each kind in one statement; ``ops`` are the rest, in ledger order.
    ``entries`` holds the new entry versions of this batch (the latest per entry id; earlier
    versions of the same batch are in ``done`` with their end already set); ``ends`` the
    versions from earlier batches that this batch ends, by (institution, record): an entry's
    versions may name different patients (an amendment filing a result on the right one).

    Most entries are the first version of their record, and probing the record index for
    each costs the lag (see projections/tables.py). So an entry ends earlier versions by a
    probe only when it may continue a record: it amends, it names its record apart from its
    source id, or its source id is a record some earlier entry named (``named_records``; a
    record first sent under its own source id cannot come again plainly: the ledger refuses
    a source id twice). ``maybe`` holds the plain entries to look up there; ``named`` the
    records this batch names.
    """

    inserts: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    entries: dict[UUID, list[Any]] = field(default_factory=dict)
    done: list[list[Any]] = field(default_factory=list)
    ends: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    maybe: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    named: set[tuple[str, str]] = field(default_factory=set)
    clock: list[tuple[int, Any]] = field(default_factory=list)
    # Rows already in COPY's binary format (``encode_rows``): (table, columns, bytes).
    copies: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    # The batch's accepted submissions counted per institution and day (projections/intake.py).
    intake: Intake = field(default_factory=Intake)

    def encode_rows(self) -> None:
        """The new entry versions and clock rows as COPY's binary format, so that they travel
        from a worker process and wait to be written as bytes (projections/copy_binary.py).
        Nothing more may be applied to these changes after."""
        rows = [*self.done, *self.entries.values()]
        if rows:
            self.copies.append(("record_entries", ENTRY_COLUMNS, pg.encode(rows, ENTRY_TYPES)))
        if self.clock:
            self.copies.append(("ledger_clock", CLOCK_COLUMNS, pg.encode(self.clock, CLOCK_TYPES)))
        self.done, self.entries, self.clock = [], {}, []

    def first(self, sql: str, *args: Any) -> None:
        self.inserts.append((sql, args))

    def op(self, sql: str, *args: Any) -> None:
        self.ops.append((sql, args))

    def end(
        self, eid: UUID, institution: str, record: str, position: int, why: str, *, plain: bool
    ) -> None:
        """End the current version of entry ``eid`` (the hash of institution and record).
        ``plain``: the version that ends it is a plain entry (no amends, its record its own
        source id), which continues a record only if an earlier entry named it."""
        row = self.entries.pop(eid, None)
        key = (institution, record)
        if row is not None:  # a version written in this same batch
            row[9], row[10] = position, why
            self.done.append(row)
        elif key not in self.ends and key not in self.maybe:
            (self.maybe if plain else self.ends)[key] = (position, why)

    async def _end_earlier_versions(self, conn: asyncpg.Connection) -> None:
        if self.maybe:
            keys = list(self.maybe)
            named = await conn.fetch(
                "SELECT institution, record FROM named_records WHERE (institution, record) "
                "IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
            for inst, rec in named:
                self.ends.setdefault((inst, rec), self.maybe[(inst, rec)])
        if self.ends:
            keys = list(self.ends)
            await conn.execute(
                "UPDATE record_entries SET valid_to = v.pos, ended_by = v.why FROM "
                "unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) "
                "AS v(inst, rec, pos, why) "
                "WHERE institution = v.inst AND record = v.rec AND valid_to IS NULL",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [self.ends[k][0] for k in keys],
                [self.ends[k][1] for k in keys],
            )

    async def flush(self, conn: asyncpg.Connection) -> None:
        keyed = bool(self.ops or self.maybe or self.ends)
        if keyed:
            # Every op, and the probes below, finds its rows by a key (a patient, a consent,
            # a record): never by reading a table whole. A connection keeps a statement's
            # generic plan from the day its table was a page or two, when a scan was the cheap
            # plan, until the table is next analyzed; the projection's UPDATE of a patient's
            # demographics was seen scanning all of them, 0.22 ms at 1,340 patients and
            # growing with the county. Planned (custom and generic) with scans ruled out here,
            # they stay key lookups however the statistics stand. It holds to the end of the
            # transaction: what follows is COPY, inserts and the position's key.
            await conn.execute("SET LOCAL enable_seqscan = off")
        for sql in dict.fromkeys(sql for sql, _ in self.inserts):
            await conn.executemany(sql, [args for s, args in self.inserts if s == sql])
        i = 0
        while i < len(self.ops):  # consecutive statements of one kind go as one executemany
            j = i
            while j < len(self.ops) and self.ops[j][0] == self.ops[i][0]:
                j += 1
            await conn.executemany(self.ops[i][0], [args for _, args in self.ops[i:j]])
            i = j
        if self.named:
            await conn.execute(
                "INSERT INTO named_records (institution, record) "
                "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                [k[0] for k in self.named],
                [k[1] for k in self.named],
            )
        if self.maybe or self.ends:
            # One probe of an index per record (named_records' key, record_entries_record):
            # the planner's costs (random_page_cost 4) would rather scan the whole table once
            # it holds a few hundred thousand rows, which then costs each batch in proportion
            # to the table.
            await self._end_earlier_versions(conn)
        rows = [tuple(r) for r in (*self.done, *self.entries.values())]
        if rows:
            await conn.copy_records_to_table("record_entries", records=rows, columns=ENTRY_COLUMNS)
        if self.clock:
            await conn.copy_records_to_table(
                "ledger_clock", records=self.clock, columns=CLOCK_COLUMNS
            )
        for table, columns, data in self.copies:
            await conn.copy_to_table(table, source=_once(data), columns=columns, format="binary")
        await self.intake.flush(conn)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    """The bytes as the async iterable ``copy_to_table`` sends (given bytes, it would take them
    for a file's path)."""
    yield data
