"""Following an institution's receipts on the exchange's receipts stream.

Through the institution's own durable consumer where the exchange made one (acknowledged once
the caller has them all), else through an ordered consumer of the caller's own that starts far
enough back to find a receipt for an earlier send of the same submission id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy

DUPLICATE_WINDOW = timedelta(seconds=120)  # the exchange's stream setting
CLOSE_PATIENCE = 5.0  # seconds each step of letting a subscription go may take


def receipt_from(data: bytes) -> dict[str, Any] | None:
    """A receipt as the exchange published it; None for what is not one."""
    try:
        receipt = json.loads(data)
    except ValueError:
        return None
    return receipt if isinstance(receipt, dict) else None


class Following:
    """A subscription to an institution's receipts, stopped by ``close``."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.task: asyncio.Task[None] | None = None  # a durable consumer's pull loop
        self.held: list[Any] = []
        self.seen = 0  # an edge's receipts: the stream sequence of the last one handed over
        self.stopping = False

    @classmethod
    async def ordered(
        cls, js: Any, consortium: str, institution: str, take: Callable[[dict[str, Any]], bool]
    ) -> Following:
        async def on_msg(msg: Any) -> None:
            receipt = receipt_from(msg.data)
            if receipt is not None:
                take(receipt)

        since = datetime.now(UTC) - DUPLICATE_WINDOW - timedelta(seconds=30)
        sub = await js.subscribe(
            f"hie.{consortium}.receipt.{institution}",
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            config=ConsumerConfig(opt_start_time=since),
        )
        return cls(sub)

    @classmethod
    async def durable(
        cls, js: Any, stream: str, durable: str, take: Callable[[dict[str, Any]], bool]
    ) -> Following:
        sub = await js.pull_subscribe_bind(durable, stream=stream)
        following = cls(sub)

        async def pull() -> None:
            while not following.stopping:
                try:
                    msgs = await sub.fetch(64, timeout=1.0)
                except TimeoutError:
                    continue  # nothing waiting (DESIGN.md: an empty batch, not a failure)
                except NatsError:
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    receipt = receipt_from(msg.data)
                    if receipt is None:
                        await msg.ack()
                    elif take(receipt):
                        # Acknowledged once the caller has them all (``close``): a sender
                        # stopped before then finds them again on its next run.
                        following.held.append(msg)
                    else:  # another sender of this institution may be waiting for it
                        await msg.nak(delay=1.0)

        following.task = asyncio.create_task(pull())
        return following

    async def close(self) -> None:
        """Stop following, acknowledge what was handed over, and let the subscription go.

        Bounded: on Python 3.11 a cancellation can be lost inside the client library's fetch
        (its ``wait_for`` returns a message that arrived in the same moment, and the pull loop
        runs on), so the loop also stops on a flag, and the wait for it is bounded.
        """
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=CLOSE_PATIENCE)
        for msg in self.held:
            with contextlib.suppress(NatsError, TimeoutError):
                await asyncio.wait_for(msg.ack(), CLOSE_PATIENCE)
        with contextlib.suppress(NatsError, TimeoutError):
            await asyncio.wait_for(self.sub.unsubscribe(), CLOSE_PATIENCE)
