"""The read pool's connections do not keep plans made while the county was small.

The read pool forces generic plans, and a connection keeps each one until a table it reads is
next analyzed. Here the reading routes run while the tables are a story's few rows, analyzed
as autovacuum analyzes a young table; then the county's rows arrive (autovacuum kept off, so
nothing analyzes them). The plans each read connection still holds are EXPLAINed where they
are kept (``EXPLAIN EXECUTE`` of the connection's own prepared statements): made small, they
read the growing tables whole. Once the connections have given them up as they went back to
the pool (exchange/servers/replanning.py, its minute made zero here), the same routes plan
again, for the tables as they now are, and no kept plan reads a growing table whole.
"""

from __future__ import annotations

import contextlib

import asyncpg
import pytest

from exchange.servers import replanning
from exchange.settings import Settings
from tests.integration.conftest import running
from tests.integration.read_plans_capture import (
    Captured,
    _json,
    full_reads,
    logging_pools,
    normalized,
)
from tests.integration.read_plans_seed import no_statistics, seed_county
from tests.integration.read_plans_traffic import drive, story
from tests.integration.test_read_plans import COUNTY_WIDE, REGISTRY


async def kept_plans(
    pool: asyncpg.Pool, owner: asyncpg.Pool, seen: list[Captured]
) -> tuple[int, list[str]]:
    """How many plans the pool's connections keep for the read path's queries, and where
    they read a growing table by a sequential scan (``name: Seq Scan on table``). Nothing
    else is run on those connections but the look itself, not through their statement
    caches (a statement run there would push a kept one out).

    Only sequential scans count here: the tables' statistics are still the story's, and
    test_read_plans.py judges plans made on such statistics; what is judged here is whether
    a plan was made for the tables as they are (a scan of a table that is a page) or not."""
    names = {fp: name for name, fp in REGISTRY.items()}
    by_text = {c.text: c for c in seen if names.get(c.fingerprint) not in (None, *COUNTY_WIDE)}
    kept, bad = 0, []
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(pool.acquire()) for _ in range(pool.get_size())]
        for conn in conns:
            listing = await conn.prepare(
                "SELECT name, statement, parameter_types::text[] AS types "
                "FROM pg_prepared_statements WHERE generic_plans > 0"
            )
            rows = await listing.fetch()
            for row in rows:
                captured = by_text.get(normalized(row["statement"]))
                if captured is None:
                    continue
                literals = [
                    f"{await owner.fetchval(f'SELECT quote_nullable($1::{t}::text)', v)}::{t}"
                    for t, v in zip(row["types"], captured.args, strict=True)
                ]
                execute = f'EXECUTE "{row["name"]}"' + (
                    f"({', '.join(literals)})" if literals else ""
                )
                look = await conn.prepare(f"EXPLAIN (FORMAT JSON) {execute}")
                plan = _json(await look.fetchval())[0]["Plan"]
                kept += 1
                name = names[captured.fingerprint]
                bad += [f"{name}: {f}" for f in full_reads(plan) if f.startswith("Seq")]
    return kept, bad


async def test_read_connections_plan_again_for_the_county_as_it_has_grown(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncpg, "create_pool", logging_pools(asyncpg.create_pool))
    monkeypatch.setattr(replanning, "REPLAN_SECONDS", 3600.0)
    async with running(settings) as ex:
        owner = await asyncpg.create_pool(ex.rt.endpoints.database_url, min_size=1, max_size=2)
        try:
            read_pool = ex.rt.read_pool
            assert read_pool is not None
            await no_statistics(owner)
            await story(ex)
            await owner.execute("ANALYZE")  # the story's few rows, as autovacuum finds them
            seen = await drive(ex)
            await seed_county(owner, ex.rt.fields)  # then the county, never analyzed

            # Plans made small and kept: what a connection would read the county with.
            kept, scans = await kept_plans(read_pool, owner, seen)
            assert kept >= 10, kept
            assert "gate.view: Seq Scan on patients" in scans, scans
            assert "records.bundle_entries: Seq Scan on record_entries" in scans, scans

            # Each connection gives its plans up as it goes back to the pool (here at once).
            monkeypatch.setattr(replanning, "REPLAN_SECONDS", 0.0)
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(read_pool.get_size()):
                    await stack.enter_async_context(read_pool.acquire())
            monkeypatch.setattr(replanning, "REPLAN_SECONDS", 3600.0)  # what they plan now, kept
            seen_again = await drive(ex, project="PLAN-AGAIN")
            kept, scans = await kept_plans(read_pool, owner, seen_again)
            assert kept >= 10, kept
            assert not scans, "kept plans that scan a growing table whole:\n" + "\n".join(scans)
        finally:
            await owner.close()


async def test_a_pooled_connection_goes_back_with_its_session_undone_and_plans_made_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange's other pools (exchange/bootstrap.py): asyncpg's reset of what a user may
    leave on a connection, and the plans given up once a minute, in one round trip."""
    assert settings.database_url
    monkeypatch.setattr(replanning, "REPLAN_SECONDS", 3600.0)
    url = settings.database_url
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=1, reset=replanning.Replanning(session=True)
    )
    other = await asyncpg.connect(url)
    query = "SELECT v FROM replan_scratch WHERE id = $1"

    async def kept_plan() -> list[str]:
        async with pool.acquire() as conn:
            name = await (
                await conn.prepare("SELECT name FROM pg_prepared_statements WHERE statement = $1")
            ).fetchval(query)
            assert name is not None
            look = await conn.prepare(f'EXPLAIN (FORMAT JSON) EXECUTE "{name}"(7)')
            return full_reads(_json(await look.fetchval())[0]["Plan"])

    try:
        await other.execute(
            "CREATE TABLE replan_scratch (id int PRIMARY KEY, v text) "
            "WITH (autovacuum_enabled = false); "
            "INSERT INTO replan_scratch SELECT g, 'x' FROM generate_series(1, 20) g; "
            "ANALYZE replan_scratch"
        )
        async with pool.acquire() as conn:
            for n in range(8):  # long enough for a generic plan, made on a page
                await conn.fetchval(query, n)
            await conn.execute("LISTEN replan_channel")
            await conn.execute("SET work_mem = '7MB'")
        await other.execute(
            "INSERT INTO replan_scratch SELECT g, 'x' FROM generate_series(21, 50000) g"
        )
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await conn.fetchval("SHOW work_mem") != "7MB"
        assert await kept_plan() == ["Seq Scan on replan_scratch"]

        monkeypatch.setattr(replanning, "REPLAN_SECONDS", 0.0)
        async with pool.acquire():
            pass  # goes back: its plans given up
        assert await kept_plan() == []
    finally:
        await other.execute("DROP TABLE IF EXISTS replan_scratch")
        await other.close()
        await pool.close()
