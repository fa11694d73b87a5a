"""A replay far behind the ledger, prepared in worker processes: the same rows as one process
makes, written in ledger order, and stopped at any range it picks up where it stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.envelope import build_envelope
from domain.submission import validate_envelope
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.ingest.ledger import Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from tests.factories import observation_item, record_items, resident
from tests.integration.conftest import registered_sender
from tests.integration.recovery_checks import snapshot

INSTITUTION = "thc-r"


async def send(rt: Runtime, key: Any, items: list[dict[str, Any]]) -> None:
    env = build_envelope(institution=INSTITUTION, key=key, sent_at=datetime.now(UTC), items=items)
    valid, problems = validate_envelope(env)
    assert valid and not problems
    await rt.sync(rt.ledger.append, [Pending(valid, json.dumps(env), datetime.now(UTC))])


async def fill(rt: Runtime) -> None:
    """Visits of 24 residents, then versions that continue records of earlier ranges: an
    amendment, a version naming a record, a plain entry whose source id was named, a
    retraction."""
    key = await registered_sender(rt, INSTITUTION)
    for n in range(24):
        items = record_items(resident(n), f"v{n}", consent=n % 3 == 0)
        items.append({**observation_item(resident(n), f"v{n}-bp2", "131"), "record": f"bp-{n}"})
        await send(rt, key, items)
    for n in range(0, 24, 4):
        await send(
            rt, key, [{**observation_item(resident(n), f"a{n}", "150"), "amends": f"v{n}-sbp"}]
        )
        await send(
            rt, key, [{**observation_item(resident(n), f"n{n}", "140"), "record": f"bp-{n}"}]
        )
        await send(rt, key, [observation_item(resident(n), f"bp-{n}", "139")])
        retract = {
            "patient": {"resident_id": resident(n)},
            "record": f"v{n}-dx",
            "reason": "录入错误",
        }
        await send(rt, key, [{"source_id": f"x{n}", "kind": "retract", "payload": retract}])


async def test_a_replay_in_worker_processes_equals_one_in_this_process(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        await fill(rt)
        head = await rt.sync(rt.ledger.max_position)

        alone = PatientRecordProjection(
            rt.pool, lambda a, n: rt.sync(rt.ledger.read, a, n), fields=rt.fields
        )
        while await alone.catch_up_once():
            pass
        expected = await snapshot(rt)
        current = await rt.pool.fetchval(
            "SELECT count(*) FROM record_entries WHERE valid_to IS NULL AND record LIKE 'bp-%'"
        )
        assert current == 24  # each named record once current, whichever way it continued

        made = rt.projection()
        assert made.replay is not None and made.replay.processes == 2  # by default
        rt.settings = dataclasses.replace(rt.settings, replay_processes=0)
        assert rt.projection().replay is None  # `hie up` replays alone
        applied: list[int] = []
        parallel = PatientRecordProjection(
            rt.pool,
            made.read,
            fields=rt.fields,
            batch=8,  # small ranges: many of them, several prepared ahead at once
            items=12,  # of 3 items at most: most ranges end early, the rest handed out again
            replay=dataclasses.replace(made.replay, behind=4, ahead=3),
            on_applied=lambda events: applied.append(events[-1][0]),
        )
        stats = "SELECT reltuples FROM pg_class WHERE relname = 'record_entries'"
        entries = await rt.pool.fetchval("SELECT count(*) FROM record_entries")
        await alone.rebuild()  # as `hie projections rebuild` does, beside the running one

        # Stopped after its first few ranges are written, then run again to the head.
        stop = asyncio.Event()

        def stop_soon(events: Any) -> None:
            applied.append(events[-1][0])
            if len(applied) == 3:
                stop.set()

        parallel.on_applied = stop_soon
        with caplog.at_level(logging.INFO, logger="projections.runner"):
            await asyncio.wait_for(parallel.run(stop), 120)
            stopped_at = await parallel.position()
            assert 0 < stopped_at < head
            parallel.on_applied = lambda events: applied.append(events[-1][0])
            stop = asyncio.Event()
            runner = asyncio.create_task(parallel.run(stop))
            try:
                await parallel.wait_for(head, timeout=120)
                # The replay's tables are analyzed once it has caught up: the planner sees them.
                async with asyncio.timeout(30):
                    while await rt.pool.fetchval(stats) != entries:
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await runner
        # Once per run: a range that ended early had its rest handed out again, in order
        # (were it not, the next range's write would find the position short and start over).
        assert caplog.text.count("replaying in 2 processes") == 2
        assert all(a < b for a, b in itertools.pairwise(applied))  # in order, each range once
        assert len(applied) > 6
        assert await snapshot(rt) == expected
