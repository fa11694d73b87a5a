"""Several gateways on one ledger: a batch that outlives the consumer's ack wait is not handed
to another gateway while its own still works on it, and when the same submissions do reach
two gateways at once (a gateway that hung, then woke), both answer "accepted" and the ledger
holds each submission once — never a refusal of what the other stored."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import UTC, datetime
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig

from adapters.envelope import build_envelope, encode
from domain.submission import submission_key
from exchange.bootstrap import Endpoints, open_runtime
from exchange.ingest.gateway import Gateway
from exchange.ingest.ledger import Ledger
from exchange.servers.nats import GATEWAY_CONSUMER, receipt_subject, stream_name, submit_subject
from exchange.settings import Settings
from tests.factories import observation_item, patient_item, resident
from tests.integration.conftest import Running


class SlowLedger:
    """The real ledger, each append held back as a loaded one's may be."""

    def __init__(self, ledger: Any, delay: float) -> None:
        self._ledger, self.delay = ledger, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def append(self, batch: Any) -> Any:
        time.sleep(self.delay)
        return self._ledger.append(batch)


class Delivered:
    """A JetStream delivery as the gateway sees it, handed to two gateways at once."""

    def __init__(self, subject: str, data: bytes, submission_id: str) -> None:
        self.subject, self.data = subject, data
        self.headers = {"Nats-Msg-Id": submission_id}
        self.metadata = None
        self.is_acked = False
        self.acks = 0

    async def ack(self) -> None:
        self.acks += 1

    async def in_progress(self) -> None:
        pass


async def collect(nc: Any, subject: str) -> list[dict[str, Any]]:
    """Every receipt published on ``subject`` from now on, as it arrives."""
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Any) -> None:
        got.append(json.loads(msg.data))

    await nc.subscribe(subject, cb=on_msg)
    return got


def envelopes(key: Any, inst: str, count: int) -> list[dict[str, Any]]:
    """``count`` submissions whose residents overlap: each new resident is registered by
    whichever submission the ledger takes first."""
    return [
        build_envelope(
            institution=inst,
            key=key,
            sent_at=datetime.now(UTC),
            items=[
                item
                for r in (n, n + 1, n + 2)
                for item in (
                    patient_item(resident(r), f"p{n}-{r}", mrn=f"M{r}"),
                    observation_item(resident(r), f"o{n}-{r}", str(100 + r)),
                )
            ],
        )
        for n in range(count)
    ]


async def test_the_same_batch_at_two_gateways_is_stored_once_and_accepted_by_both(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await Running(rt).register("thc-c")
        c = settings.consortium
        sent = envelopes(key, "thc-c", 12)
        receipts = await collect(rt.nc, receipt_subject(c, "thc-c"))
        # Two gateways as two processes have them: a ledger (and identity cache) each.
        ledgers = [
            await rt.sync(
                functools.partial(
                    Ledger,
                    settings.database_url,
                    settings.secrets.ledger_cipher_key,
                    settings.secrets.pseudonym_key,
                    crypto_profile=settings.crypto_profile,
                )
            )
            for _ in range(2)
        ]
        try:
            gateways = [
                Gateway(ledger, rt.nc, c, executor=rt.executor, retry_delay=0.2)
                for ledger in ledgers
            ]
            subject = submit_subject(c, "thc-c")
            deliveries = [
                [Delivered(subject, encode(e), e["submission_id"]) for e in sent] for _ in gateways
            ]
            await asyncio.gather(
                gateways[0].handle(deliveries[0]),  # type: ignore[arg-type]
                gateways[1].handle(list(reversed(deliveries[1]))),  # type: ignore[arg-type]
            )
            await rt.nc.flush()
            deadline = time.monotonic() + 10
            while len(receipts) < 2 * len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for ledger in ledgers:
                ledger.close()
        assert all(d.acks == 1 for both in deliveries for d in both)
        # Both gateways answer every submission "accepted", one of them as a repeat, with
        # the same position: no refusal of a submission because the other stored it first.
        assert len(receipts) == 2 * len(sent)
        assert {r["status"] for r in receipts} == {"accepted"}, [
            p["code"] for r in receipts for p in r.get("problems", [])
        ]
        for e in sent:
            answers = [r for r in receipts if r["submission_id"] == e["submission_id"]]
            assert sorted(r["repeat"] for r in answers) == [False, True]
            assert answers[0]["positions"] == answers[1]["positions"]
        held = await rt.sync(
            rt.ledger.positions_of, [submission_key("thc-c", e["submission_id"]) for e in sent]
        )
        assert len(held) == len(sent)


async def test_a_batch_that_outlives_the_ack_wait_is_not_delivered_again(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await Running(rt).register("thc-s")
        c = settings.consortium
        js = rt.nc.jetstream()
        # The consumer's ack wait, shortened: each append below takes longer than it.
        await js.add_consumer(
            stream_name(c, "SUBMIT"),
            ConsumerConfig(
                durable_name=GATEWAY_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=1.0,
                max_ack_pending=2000,
                max_deliver=-1,
                filter_subject=f"hie.{c}.submit.*",
            ),
        )
        info = await js.consumer_info(stream_name(c, "SUBMIT"), GATEWAY_CONSUMER)
        assert info.config.ack_wait == 1.0
        receipts = await collect(rt.nc, receipt_subject(c, "thc-s"))
        sent = envelopes(key, "thc-s", 6)
        for e in sent:
            await js.publish(
                submit_subject(c, "thc-s"), encode(e), headers={"Nats-Msg-Id": e["submission_id"]}
            )
        slow = SlowLedger(rt.ledger, 2.5)
        gateways = [
            Gateway(
                slow,  # type: ignore[arg-type]
                rt.nc,
                c,
                executor=rt.executor,
                batch_max_bytes=1,  # one commit per submission: the batch takes 15 s
                progress_every=0.3,
            )
            for _ in range(2)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(g.run(stop)) for g in gateways]
        try:
            deadline = time.monotonic() + 60
            while len(receipts) < len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # a redelivery would have been answered by now
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        # Each submission answered once, none of them as a repeat: no gateway was handed
        # what another was still working on.
        assert sorted(r["submission_id"] for r in receipts) == sorted(
            e["submission_id"] for e in sent
        )
        assert {(r["status"], r["repeat"]) for r in receipts} == {("accepted", False)}
