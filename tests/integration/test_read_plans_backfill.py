"""A database made before entries carried their recording time gets it from the ledger clock
when the exchange starts on it: no projection rebuild. One whose read models have another
shape (a key or a column's type changed) has them made again, for the runner to replay."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import asyncpg

from projections.tables import SHAPE, create_schema

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


async def test_read_models_of_another_shape_are_made_again_for_a_replay(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await create_schema(pool) is False  # a new database: nothing to replay
        # A database built before the shape was recorded (plaintext identifiers, say).
        await pool.execute("DROP TABLE projection_shape")
        await pool.execute(
            "INSERT INTO patients (patient_id, temporary, position) VALUES ($1, false, 3)", uuid4()
        )
        await pool.execute("UPDATE projection_position SET position = 3")
        assert await create_schema(pool) is True
        assert await pool.fetchval("SELECT count(*) FROM patients") == 0
        assert await pool.fetchval("SELECT position FROM projection_position") == 0
        assert await pool.fetchval("SELECT shape FROM projection_shape") == SHAPE
        assert await create_schema(pool) is False  # once
    finally:
        await pool.close()
