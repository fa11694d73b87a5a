"""deploy/postgresql/autovacuum.sql applies to the tables the exchange makes: every table it
names exists, and the settings land."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from exchange.bootstrap import Endpoints, open_runtime
from exchange.settings import Settings

SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgresql" / "autovacuum.sql"


async def test_the_autovacuum_settings_name_real_tables_and_apply(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    # The exchange makes its tables (ledger, audit log, read models) at its first start.
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)):
        pass
    text = SQL.read_text()
    named = re.findall(r"ALTER TABLE IF EXISTS (\w+) SET", text)
    conn = await asyncpg.connect(settings.database_url)
    try:
        missing = [t for t in named if await conn.fetchval("SELECT to_regclass($1)", t) is None]
        assert not missing, f"autovacuum.sql names tables the exchange does not have: {missing}"
        await conn.execute(text)
        options = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE relname = 'ledger_events'"
        )
        toast = await conn.fetchval(
            "SELECT t.reloptions FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid "
            "WHERE c.relname = 'ledger_events'"
        )
        entries = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE relname = 'record_entries'"
        )
    finally:
        await conn.close()
    assert "autovacuum_vacuum_insert_scale_factor=0.01" in options
    assert "autovacuum_vacuum_insert_scale_factor=0.01" in toast
    assert "fillfactor=90" in entries
