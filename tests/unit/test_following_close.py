"""Letting go of an institution's receipts ends, even when the client library loses a
cancellation (Python 3.11's ``wait_for`` returns a message that arrived in the moment it was
cancelled, and the fetch returns it as if nothing happened)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.receipts import Following


class _Msg:
    def __init__(self, n: int) -> None:
        self.data = json.dumps({"submission_id": f"s-{n}", "status": "accepted"}).encode()
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float = 0.0) -> None:
        pass


class _SwallowingSub:
    """A pull subscription whose fetch answers a cancellation with a message, as the
    library's does when the message and the cancellation meet."""

    def __init__(self) -> None:
        self.n = 0
        self.unsubscribed = False

    async def fetch(self, batch: int, timeout: float) -> list[_Msg]:
        self.n += 1
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            return [_Msg(self.n)]
        raise TimeoutError

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class _Js:
    def __init__(self, sub: Any) -> None:
        self.sub = sub

    async def pull_subscribe_bind(self, durable: str, stream: str) -> Any:
        return self.sub


async def test_close_ends_though_the_cancellation_is_lost() -> None:
    sub = _SwallowingSub()
    taken: list[str] = []

    def take(receipt: dict[str, Any]) -> bool:
        taken.append(receipt["submission_id"])
        return True

    following = await Following.durable(_Js(sub), "HIE_T_RECEIPTS", "receipts-x", take)
    await asyncio.sleep(0.05)  # the loop is waiting in its fetch
    await asyncio.wait_for(following.close(), 8)  # hung for ever before the flag
    assert following.task is not None
    await asyncio.wait_for(asyncio.shield(following.task), 3)  # the loop itself ended
    assert sub.unsubscribed
    assert taken == ["s-1"]  # what the lost cancellation handed over was taken


async def test_close_acknowledges_what_was_handed_over() -> None:
    class _Once(_SwallowingSub):
        async def fetch(self, batch: int, timeout: float) -> list[_Msg]:
            if self.n == 0:
                self.n += 1
                self.first = [_Msg(1), _Msg(2)]
                return self.first
            return await super().fetch(batch, timeout)

    sub = _Once()
    following = await Following.durable(_Js(sub), "HIE_T_RECEIPTS", "receipts-x", lambda r: True)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(following.close(), 8)
    assert [m.acked for m in sub.first] == [True, True]
