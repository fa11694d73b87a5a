"""A database made before entries carried their recording time gets it from the ledger clock
when the exchange starts on it: no projection rebuild."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import asyncpg

from projections.tables import create_schema

AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def test_entries_of_an_older_database_get_their_recording_time_once(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await create_schema(pool)
        # As the tables stood before the column: an entry and its ledger event's time.
        await pool.execute("ALTER TABLE record_entries DROP COLUMN recorded_at")
        await pool.execute("INSERT INTO ledger_clock VALUES (7, $1)", AT)
        entry = uuid4()
        await pool.execute(
            "INSERT INTO record_entries (entry_id, patient_id, institution, record, source_id, "
            "kind, submission_id, resource, valid_from) "
            "VALUES ($1, $2, 'thc-east', 'r1', 's1', 'encounter', 'sub-1', '{}', 7)",
            entry,
            uuid4(),
        )
        await create_schema(pool)
        assert (
            await pool.fetchval("SELECT recorded_at FROM record_entries WHERE entry_id = $1", entry)
            == AT
        )
        # Once only: a later start finds the column and leaves the rows alone.
        await pool.execute("UPDATE record_entries SET recorded_at = NULL")
        await create_schema(pool)
        assert await pool.fetchval("SELECT recorded_at FROM record_entries") is None
    finally:
        await pool.close()
