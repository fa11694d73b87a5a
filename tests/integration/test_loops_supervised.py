"""A loop of the exchange that ends before it is asked to (a bug, or a failure it does not
survive) stops the whole process, with the others stopped in order, so that its supervisor
starts it again whole: never a process serving reads while its projection is dead."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exchange.bootstrap import Endpoints, LoopEnded, Runtime, open_runtime, serve
from exchange.settings import Settings


class _Broken:
    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.5)
        raise RuntimeError("the loop's own failure")


async def test_a_loop_that_ends_on_its_own_stops_the_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.database_url and settings.nats_url
    monkeypatch.setattr(Runtime, "notifier", lambda self: _Broken())
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        stop = asyncio.Event()
        served: Any = asyncio.create_task(serve(rt, stop, http=False))
        with pytest.raises(LoopEnded) as ended:
            await asyncio.wait_for(served, 30)
        assert "notifier" in str(ended.value)
        assert isinstance(ended.value.__cause__, RuntimeError)
        assert stop.is_set()  # the other loops were told to stop, and have
