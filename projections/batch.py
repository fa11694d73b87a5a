"""One batch of ledger events as the rows it writes, sent to PostgreSQL in a few round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

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


@dataclass
class Changes:
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
            # One probe of the primary key per id: the planner's costs (random_page_cost 4)
            # would rather scan the whole table once it holds a few hundred thousand rows,
            # which then costs each batch in proportion to the table.
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute(
                "UPDATE record_entries SET valid_to = v.pos, ended_by = v.why FROM "
                "unnest($1::uuid[], $2::bigint[], $3::text[]) AS v(id, pos, why) "
                "WHERE entry_id = v.id AND valid_to IS NULL",
                ids,
                [self.ends[e][0] for e in ids],
                [self.ends[e][1] for e in ids],
            )
            await conn.execute("SET LOCAL enable_seqscan = DEFAULT")
        rows = [tuple(r) for r in (*self.done, *self.entries.values())]
        if rows:
            await conn.copy_records_to_table("record_entries", records=rows, columns=ENTRY_COLUMNS)
        if self.clock:
            await conn.copy_records_to_table(
                "ledger_clock", records=self.clock, columns=("position", "at")
            )
