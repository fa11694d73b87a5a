"""What every fault test asserts once the exchange has recovered: each submission that got an
accepted receipt is in the ledger exactly once, the projections equal a rebuild, and the audit
log verifies."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from domain.submission import Submission
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.cli.audit_log import verify
from exchange.settings import Settings
from projections.postgres import TABLES, PatientRecordProjection


async def ledger_counts(rt: Runtime) -> Counter[str]:
    """How many times the ledger holds each submission id."""
    end = await rt.sync(rt.ledger.max_position)
    events = await rt.sync(rt.ledger.read, 0, end + 1)
    return Counter(e.submission_id for _, e in events if isinstance(e, Submission.Accepted))


async def assert_each_accepted_once(rt: Runtime, accepted: set[str]) -> None:
    held = await ledger_counts(rt)
    lost = accepted - set(held)
    doubled = {sid for sid, n in held.items() if n > 1}
    assert not lost, f"{len(lost)} accepted submission(s) missing from the ledger"
    assert not doubled, f"{len(doubled)} submission(s) held more than once"


async def snapshot(rt: Runtime) -> dict[str, list[str]]:
    out = {}
    async with rt.pool.acquire() as conn:
        for table in TABLES:
            rows = await conn.fetch(f"SELECT * FROM {table}")
            out[table] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
    return out


async def assert_projection_equals_rebuild(settings: Settings) -> None:
    """The read models the running exchange left, caught up, equal a replay of the whole
    ledger, row for row. Run once the exchange has stopped (no live runner in the way)."""
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:

        async def read(after: int, limit: int) -> Any:
            return await rt.sync(rt.ledger.read, after, limit)

        runner = PatientRecordProjection(rt.pool, read, fields=rt.fields)
        while await runner.catch_up_once():  # where the live runner stopped, to the end
            pass
        live = await snapshot(rt)
        await runner.rebuild()
        while await runner.catch_up_once():
            pass
        assert await snapshot(rt) == live


async def assert_audit_verifies(rt: Runtime) -> None:
    assert await verify(rt.settings) == 0
