"""The ledger's source records: which clinical records an institution has sent (what a
correction must point at) found through the primary key and a partial index of the records
named apart from their source id, with no index that repeats the primary key's keys."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from exchange.settings import Settings
from tests.integration.ledger_steps import open_ledger

# (institution, source_id, record): an observation (its record is its source id), a visit's
# admission and discharge (one record named apart from both), a control item (no record), a
# correction of the observation, and another institution's row of the same names.
ROWS = [
    ("thc-a", "obs-1", "obs-1"),
    ("thc-a", "adm-7", "visit-7"),
    ("thc-a", "dis-7", "visit-7"),
    ("thc-a", "consent-3", None),
    ("thc-a", "obs-1-fix", "obs-1"),
    ("thc-b", "obs-2", "obs-2"),
]
ASKED = ["obs-1", "visit-7", "adm-7", "dis-7", "consent-3", "obs-1-fix", "obs-2", "nothing"]
# The query before the partial index: every row's record, through an index of all of them.
BEFORE = (
    "SELECT DISTINCT record FROM ledger_source_records WHERE institution = $1 AND record = ANY($2)"
)


async def insert(conn: asyncpg.Connection, rows: list[tuple[str, str, str | None]]) -> None:
    await conn.executemany(
        "INSERT INTO ledger_source_records (institution, source_id, submission, record) "
        "VALUES ($1, $2, $3, $4)",
        [(i, s, uuid.uuid4(), r) for i, s, r in rows],
    )


async def indexes(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_source_records'"
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_a_ledger_made_with_the_index_of_every_record_has_it_replaced(
    settings: Settings,
) -> None:
    (await open_ledger(settings)).close()
    conn = await asyncpg.connect(settings.database_url)
    try:
        # As an earlier release made it: every row's record indexed.
        await conn.execute(
            "CREATE INDEX ledger_source_records_record ON ledger_source_records "
            "(institution, record)"
        )
        (await open_ledger(settings)).close()
        found = await indexes(conn)
    finally:
        await conn.close()
    assert "ledger_source_records_record" not in found
    assert found["ledger_source_records_named"].endswith("WHERE (record <> source_id)")
    assert set(found) == {"ledger_source_records_pkey", "ledger_source_records_named"}


async def test_the_records_held_are_those_the_index_of_every_record_found(
    settings: Settings,
) -> None:
    ledger = await open_ledger(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await insert(conn, ROWS)
        for institution in ("thc-a", "thc-b", "thc-c"):
            held = await asyncio.to_thread(ledger.ledger_recorder.held_records, institution, ASKED)
            before = {r["record"] for r in await conn.fetch(BEFORE, institution, ASKED)}
            assert held == before
        assert await asyncio.to_thread(ledger.ledger_recorder.held_records, "thc-a", ASKED) == {
            "obs-1",
            "visit-7",
        }
    finally:
        await conn.close()
        ledger.close()


async def test_the_records_held_are_found_without_reading_the_table_in_full(
    settings: Settings,
) -> None:
    ledger = await open_ledger(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        # A county's worth of rows, one in fifty a record named apart from its source id.
        rows = [
            ("thc-a", f"obs-{n}", f"visit-{n // 2}" if n % 50 == 0 else f"obs-{n}")
            for n in range(60_000)
        ]
        await conn.copy_records_to_table(
            "ledger_source_records",
            records=[(i, s, uuid.uuid4(), r) for i, s, r in rows],
            columns=["institution", "source_id", "submission", "record"],
        )
        await conn.execute("ANALYZE ledger_source_records")
        statement = ledger.ledger_recorder.held_records_sql().as_string(None)
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + statement.replace("%(i)s", "$1").replace("%(r)s", "$2"),
                "thc-a",
                ["obs-7", "visit-50", "nothing"],
            )
        )
    finally:
        await conn.close()
        ledger.close()
    assert "Seq Scan" not in plan, plan
    assert "ledger_source_records_pkey" in plan and "ledger_source_records_named" in plan, plan
