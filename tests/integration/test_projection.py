"""The patient-record projection: position tracked in the same transaction as its rows, so a
crash mid-batch, a restart or a second runner never doubles a row, and it equals a rebuild."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.envelope import build_envelope
from domain.submission import Submission, validate_envelope
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.ingest.ledger import Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from tests.factories import record_items, resident
from tests.integration.conftest import registered_sender
from tests.integration.recovery_checks import snapshot


async def append(rt: Runtime, key: Any, start: int, count: int) -> None:
    for n in range(start, start + count):
        env = build_envelope(
            institution="thc-p",
            key=key,
            sent_at=datetime.now(UTC),
            items=record_items(resident(n), f"r{n}", consent=n % 2 == 0),
        )
        valid, problems = validate_envelope(env)
        assert valid and not problems
        await rt.sync(rt.ledger.append, [Pending(valid, json.dumps(env), datetime.now(UTC))])


class Crash(Exception):
    pass


async def test_restart_crash_and_rivals_never_double_and_equal_a_rebuild(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-p")
        await append(rt, key, 0, 10)
        end = await rt.sync(rt.ledger.max_position)

        # A runner applies part of the ledger, then crashes in the middle of its next batch.
        async def crashing_read(after: int, limit: int) -> list[tuple[int, Any]]:
            events = await rt.sync(rt.ledger.read, after, limit)
            if after > 0:  # the batch's real events apply, then one that cannot be read
                poison = Submission(
                    institution="thc-p",
                    submission_id="poison",
                    envelope="{}",
                    patient_ids=[],
                    received_at=datetime.now(UTC),
                ).collect_events()[0]
                return [*events, (10**9, poison)]
            return events

        first = PatientRecordProjection(rt.pool, crashing_read, fields=rt.fields, batch=7)
        assert await first.catch_up_once() == 7
        with pytest.raises(RuntimeError):
            await first.catch_up_once()
        assert await first.position() == (await rt.sync(rt.ledger.read, 0, 7))[-1][0]

        # A fresh runner, started after the crash, and a rival running at the same time.
        async def read(after: int, limit: int) -> list[tuple[int, Any]]:
            return await rt.sync(rt.ledger.read, after, limit)

        second = PatientRecordProjection(rt.pool, read, fields=rt.fields, batch=5)
        rival = PatientRecordProjection(rt.pool, read, fields=rt.fields, batch=3)
        await append(rt, key, 10, 6)
        end = await rt.sync(rt.ledger.max_position)
        while await second.position() < end:
            await asyncio.gather(second.catch_up_once(), rival.catch_up_once())
        after_restart = await snapshot(rt)
        async with rt.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM record_entries") == 16 * 3
            assert await conn.fetchval("SELECT count(*) FROM consents") == 8
            assert await conn.fetchval("SELECT count(*) FROM patients") == 16
            # Each patient's demographics came with the submission that introduced them.
            assert (
                await conn.fetchval("SELECT count(*) FROM patients WHERE demographics IS NULL") == 0
            )

        # Rebuilt from the ledger, the projection is the same, row for row.
        await second.rebuild()
        assert await second.position() == 0
        stats = "SELECT reltuples FROM pg_class WHERE relname = 'record_entries'"
        assert await rt.pool.fetchval(stats) != 16 * 3  # the emptied table's statistics
        while await second.catch_up_once():
            pass
        assert await snapshot(rt) == after_restart
        # Once caught up, the replay's tables are analyzed: the planner sees what they hold.
        assert await rt.pool.fetchval(stats) == 16 * 3


async def test_runners_wake_on_the_ledgers_commit_and_race_without_doubling(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-p")

        async def read(after: int, limit: int) -> list[tuple[int, Any]]:
            return await rt.sync(rt.ledger.read, after, limit)

        # Two pipelined runners follow the same ledger, polling only once a minute: what
        # moves them is the NOTIFY in each appending commit.
        runners = [
            PatientRecordProjection(rt.pool, read, fields=rt.fields, batch=b) for b in (2, 3)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop, idle=60.0)) for r in runners]
        try:
            for n in range(0, 12, 3):
                await append(rt, key, n, 3)
                end = await rt.sync(rt.ledger.max_position)
                await runners[n % 2].wait_for(end, timeout=10)  # far less than the poll
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        raced = await snapshot(rt)
        async with rt.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM record_entries") == 12 * 3
            assert await conn.fetchval("SELECT count(*) FROM patients") == 12

        # And what they built together is what one runner builds from scratch.
        await runners[0].rebuild()
        while await runners[0].catch_up_once():
            pass
        assert await snapshot(rt) == raced


async def test_a_batch_holds_about_the_items_asked_for_whatever_the_envelopes_hold(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-p")
        await append(rt, key, 100, 6)  # envelopes of 4 items (3 entries and a consent or not)
        end = await rt.sync(rt.ledger.max_position)

        async def read(after: int, limit: int) -> list[tuple[int, Any]]:
            return await rt.sync(rt.ledger.read, after, limit)

        runner = PatientRecordProjection(rt.pool, read, fields=rt.fields, batch=10, items=8)
        sizes = []
        while await runner.position() < end:
            sizes.append(await runner.catch_up_once())
        # The first read takes 10 events; the next ones about 8 items' worth, in envelopes
        # of 4 or 5 items with the identity events between them.
        assert sizes[0] == 10 and len(sizes) > 2 and max(sizes[1:]) <= 6
        assert await rt.pool.fetchval("SELECT count(*) FROM record_entries") > 0
