"""The ledger application as the composition root builds it: each commit NOTIFYs the channel
bootstrap names (the projections'), and a ledger built without one NOTIFYs nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from adapters.envelope import new_private_key, public_key_b64
from exchange.bootstrap import Endpoints, open_runtime
from exchange.settings import Settings
from projections.postgres import LEDGER_CHANNEL
from tests.integration.ledger_steps import open_ledger


async def heard(settings: Settings, commit: Callable[[], object]) -> list[str]:
    """The channels notified while ``commit`` runs (in the thread pool)."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    got: list[str] = []
    try:
        await conn.add_listener(LEDGER_CHANNEL, lambda *args: got.append(args[2]))
        await asyncio.to_thread(commit)
        await asyncio.sleep(0.3)  # a notification arrives after the commit, asynchronously
    finally:
        await conn.close()
    return got


async def test_the_runtime_ledger_wakes_the_projections_at_each_commit(settings: Settings) -> None:
    endpoints = Endpoints(settings.database_url or "", settings.nats_url or "")
    async with open_runtime(settings, endpoints) as rt:
        key = public_key_b64(new_private_key(settings.profile))
        # Registering an institution is a commit: the projections' channel hears of it.
        assert await heard(
            settings,
            lambda: rt.ledger.register_institution(
                "thc-n", "测试卫生院", "township_health_centre", key
            ),
        ) == [LEDGER_CHANNEL]


async def test_a_ledger_without_a_channel_notifies_nobody(settings: Settings) -> None:
    ledger = await open_ledger(settings)
    try:
        key = public_key_b64(new_private_key(settings.profile))
        assert (
            await heard(
                settings,
                lambda: ledger.register_institution(
                    "thc-n", "测试卫生院", "township_health_centre", key
                ),
            )
            == []
        )
    finally:
        ledger.close()
