"""The notifier runs a round as soon as the projection of its process commits, rather than
polling: with ``applied`` given, nothing runs between commits until ``APPLIED_IDLE``."""

from __future__ import annotations

import asyncio

import pytest

from exchange.ingest import notifier as module
from exchange.ingest.notifier import Notifier


def counting(applied: asyncio.Event | None, idle: float) -> tuple[Notifier, list[int]]:
    """A notifier whose rounds only count themselves."""
    n = Notifier.__new__(Notifier)
    n.applied, n.idle = applied, idle
    rounds: list[int] = []

    async def send_once() -> int:
        rounds.append(len(rounds))
        return 0

    n.send_once = send_once  # type: ignore[method-assign]
    return n, rounds


async def until(rounds: list[int], count: int) -> None:
    async with asyncio.timeout(10):
        while len(rounds) < count:
            await asyncio.sleep(0.01)


async def test_a_round_runs_when_the_projection_commits_and_not_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "APPLIED_IDLE", 3600.0)  # no round from the fallback here
    applied, stop = asyncio.Event(), asyncio.Event()
    n, rounds = counting(applied, 0.2)
    running = asyncio.create_task(n.run(stop))
    await until(rounds, 1)
    await asyncio.sleep(0.5)  # more than the polling interval of old: still one round
    assert rounds == [0]
    applied.set()  # the projection committed
    await until(rounds, 2)
    assert not applied.is_set()  # cleared for the round it started
    stop.set()
    async with asyncio.timeout(10):
        await running


async def test_without_a_projection_beside_it_the_notifier_polls() -> None:
    stop = asyncio.Event()
    n, rounds = counting(None, 0.05)
    running = asyncio.create_task(n.run(stop))
    await until(rounds, 3)
    stop.set()
    async with asyncio.timeout(10):
        await running


async def test_commits_in_quick_succession_start_a_round_at_most_every_idle_interval() -> None:
    applied, stop = asyncio.Event(), asyncio.Event()
    n, rounds = counting(applied, 0.2)
    running = asyncio.create_task(n.run(stop))
    loop = asyncio.get_running_loop()
    began = loop.time()
    while loop.time() - began < 1.0:  # the projection commits every 10 ms for a second
        applied.set()
        await asyncio.sleep(0.01)
    elapsed = loop.time() - began
    await until(rounds, 2)
    stop.set()
    async with asyncio.timeout(10):
        await running
    assert len(rounds) <= 2 + elapsed / 0.2  # not one round per commit (a hundred)
