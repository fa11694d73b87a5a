"""The ledger's events table and autovacuum: an append waits while a VACUUM or ANALYZE of the
table holds its lock (the library's append lock, EXCLUSIVE, conflicts with theirs), so the
table's autovacuum runs unthrottled and freezes as it goes (exchange/ingest/recorder.py)."""

from __future__ import annotations

import asyncio

import asyncpg

from adapters.envelope import new_private_key, public_key_b64
from exchange.settings import Settings
from tests.integration.ledger_steps import open_ledger


async def test_the_events_table_is_vacuumed_unthrottled_and_frozen_as_it_goes(
    settings: Settings,
) -> None:
    # Opening the ledger as the owner makes its tables, with their storage parameters.
    ledger = await open_ledger(settings)
    ledger.close()
    conn = await asyncpg.connect(settings.database_url)
    try:
        options = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE relname = 'ledger_events'"
        )
    finally:
        await conn.close()
    assert "autovacuum_vacuum_cost_delay=0" in options
    assert "autovacuum_freeze_min_age=0" in options


async def test_an_append_waits_while_an_analyze_of_the_events_table_holds_its_lock(
    settings: Settings,
) -> None:
    ledger = await open_ledger(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        # An ANALYZE of the events table (as autovacuum runs it) holds its lock until the end
        # of its transaction ...
        analyze = conn.transaction()
        await analyze.start()
        await conn.execute("ANALYZE ledger_events")
        key = public_key_b64(new_private_key(settings.profile))
        append = asyncio.create_task(
            asyncio.to_thread(
                ledger.register_institution, "thc-n", "测试卫生院", "township_health_centre", key
            )
        )
        # ... and an append meanwhile waits for that lock rather than committing.
        await asyncio.sleep(1.0)
        assert not append.done()
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = 'ledger_events'::regclass"
        )
        assert waiting == 1
        # Once the ANALYZE is over, the append goes through.
        await analyze.rollback()
        await asyncio.wait_for(append, 30)
    finally:
        await conn.close()
        ledger.close()
