"""A gateway's batches are bounded by bytes as well as by count: however large the envelopes
waiting in the stream, it holds about ``fetch_bytes`` of them at once (a parsed, validated
envelope takes many times its size in memory), and every one is still stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.envelope import build_envelope, encode
from domain.submission import submission_key
from exchange.bootstrap import Endpoints, open_runtime
from exchange.ingest.gateway import Gateway
from exchange.servers.nats import submit_subject
from exchange.settings import Settings
from tests.factories import observation_item, resident
from tests.integration.conftest import Running


class CountingGateway(Gateway):
    """The gateway, noting the size of each batch it handles."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[int, int]] = []  # (submissions, bytes)

    async def handle(self, msgs: Sequence[Any]) -> None:
        self.batches.append((len(msgs), sum(len(m.data) for m in msgs)))
        await super().handle(msgs)


async def test_a_batch_holds_about_fetch_bytes_of_envelopes(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await Running(rt).register("thc-b")
        c = settings.consortium
        sent = [
            build_envelope(
                institution="thc-b",
                key=key,
                sent_at=datetime.now(UTC),
                items=[observation_item(resident(n * 40 + i), f"b{n}-{i}") for i in range(40)],
            )
            for n in range(12)
        ]
        size = len(encode(sent[0]))
        js = rt.nc.jetstream()
        for e in sent:  # all waiting before the gateway starts: it could take them at once
            await js.publish(
                submit_subject(c, "thc-b"), encode(e), headers={"Nats-Msg-Id": e["submission_id"]}
            )
        gateway = CountingGateway(
            rt.ledger, rt.nc, c, executor=rt.executor, fetch_bytes=int(size * 3.5)
        )
        keys = [submission_key("thc-b", e["submission_id"]) for e in sent]
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            for _ in range(300):
                if len(await rt.sync(rt.ledger.positions_of, keys)) == len(sent):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
        assert len(await rt.sync(rt.ledger.positions_of, keys)) == len(sent)
        # Three at a time at most (the budget holds three and a half of this size), and more
        # than one at a time when more wait: the budget bounds batches, it does not end them.
        assert sum(n for n, _ in gateway.batches) == len(sent)
        assert max(n for n, _ in gateway.batches) == 3
        assert all(b <= size * 3.5 * 1.1 for _, b in gateway.batches)
