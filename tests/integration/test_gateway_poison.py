"""A poison message never blocks the stream; garbage of any shape gets a reasoned refusal.

The poison here is a submission the ledger fails on every time while the servers are well
(as a defect triggered by one message would): the gateway tries it alone a few times, then
sets it aside in the dead-letter stream with a receipt, while everything around it is stored.
A submission that only keeps losing the race for a patient's identity to other gateways is
not poison: it is stored once a save wins, however many deliveries that takes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.envelope import build_envelope, encode
from domain.submission import submission_key
from exchange.bootstrap import Endpoints, open_runtime
from exchange.ingest.gateway import CONTENDED_TRIES, POISON_DELIVERIES, Gateway
from exchange.ingest.ledger import IntegrityError
from exchange.servers.nats import deadletter_subject, receipt_subject, stream_name, submit_subject
from exchange.settings import Settings
from tests.factories import json_values, observation_item, resident
from tests.integration.conftest import Running


class DefectiveLedger:
    """The real ledger, except that appending one given submission always fails."""

    def __init__(self, ledger: Any, poison_key: Any) -> None:
        self._ledger, self.poison_key = ledger, poison_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def append(self, batch: Any) -> Any:
        if any(p.key == self.poison_key for p in batch):
            raise KeyError("a defect this one submission triggers")
        return self._ledger.append(batch)


class ContendedLedger(DefectiveLedger):
    """The real ledger, except that one given submission's saves are refused ``losses``
    times as if another gateway had just saved an identity it names (neither it nor its
    source records are held), as under heavy load from several gateways."""

    def __init__(self, ledger: Any, poison_key: Any, losses: int) -> None:
        super().__init__(ledger, poison_key)
        self.losses = losses

    def append(self, batch: Any) -> Any:
        if self.losses and any(p.key == self.poison_key for p in batch):
            self.losses -= 1
            raise IntegrityError("a rival gateway saved an identity first")
        return self._ledger.append(batch)


def signed(key: Any, institution: str, residents: range) -> list[dict[str, Any]]:
    """One signed submission per resident, each with one observation."""
    return [
        build_envelope(
            institution=institution,
            key=key,
            sent_at=datetime.now(UTC),
            items=[observation_item(resident(n), f"o{n}", str(100 + n % 100))],
        )
        for n in residents
    ]


async def deliver(
    rt: Any, ledger: Any, envelopes: list[dict[str, Any]], institution: str
) -> dict[str, dict[str, Any]]:
    """Queue the envelopes, run a gateway on ``ledger`` until every one has its receipt."""
    c = rt.settings.consortium
    gateway = Gateway(
        ledger,
        rt.nc,
        c,
        executor=rt.executor,
        audit=rt.audit_writer,
        retry_delay=0.2,
    )
    receipts: dict[str, dict[str, Any]] = {}
    got = asyncio.Event()

    async def on_receipt(msg: Any) -> None:
        receipt = json.loads(msg.data)
        receipts[receipt["submission_id"]] = receipt
        if len(receipts) == len(envelopes):
            got.set()

    await rt.nc.subscribe(receipt_subject(c, institution), cb=on_receipt)
    js = rt.nc.jetstream()
    for env in envelopes:
        await js.publish(
            submit_subject(c, institution),
            encode(env),
            headers={"Nats-Msg-Id": env["submission_id"]},
        )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(got.wait(), 60)
    finally:
        stop.set()
        await task
    return receipts


async def test_a_submission_losing_identity_races_is_stored_not_set_aside(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        running = Running(rt)
        key = await running.register("thc-3")
        envelopes = signed(key, "thc-3", range(200, 205))
        contended = envelopes[2]
        # Twice as many lost races as a batch's save and the tries alone on every delivery up
        # to the poison limit: a gateway counting them as failures would set it aside.
        losses = 2 * (1 + CONTENDED_TRIES) * (POISON_DELIVERIES + 1)
        ledger = ContendedLedger(
            rt.ledger, submission_key("thc-3", contended["submission_id"]), losses
        )
        receipts = await deliver(rt, ledger, envelopes, "thc-3")

        assert ledger.losses == 0
        assert [receipts[e["submission_id"]]["status"] for e in envelopes] == ["accepted"] * 5
        held = await rt.sync(
            rt.ledger.positions_of, [submission_key("thc-3", e["submission_id"]) for e in envelopes]
        )
        assert len(held) == 5  # each once: a position per submission
        info = await rt.nc.jetstream().stream_info(stream_name(rt.settings.consortium, "SUBMIT"))
        assert info.state.messages == 0


async def test_a_poison_message_is_set_aside_and_the_rest_flows(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        running = Running(rt)
        key = await running.register("thc-1")
        envelopes = signed(key, "thc-1", range(11))
        poison = envelopes[5]
        ledger = DefectiveLedger(rt.ledger, submission_key("thc-1", poison["submission_id"]))
        # Eleven submissions, the poison in the middle, queued before the gateway starts.
        receipts = await deliver(rt, ledger, envelopes, "thc-1")
        c, js = settings.consortium, rt.nc.jetstream()

        # Every other submission is stored; the poison is refused with a reason, not lost.
        assert [receipts[e["submission_id"]]["status"] for e in envelopes] == ["accepted"] * 5 + [
            "rejected"
        ] + ["accepted"] * 5
        (problem,) = receipts[poison["submission_id"]]["problems"]
        assert problem["code"] == "gateway.internal_error"
        assert str(POISON_DELIVERIES) in problem["message"]
        kept = await js.get_last_msg(stream_name(c, "DEADLETTER"), deadletter_subject(c, "thc-1"))
        assert json.loads(kept.data)["submission_id"] == poison["submission_id"]
        info = await js.stream_info(stream_name(c, "SUBMIT"))
        assert info.state.messages == 0  # nothing left behind, nothing stuck
        held = await rt.sync(
            rt.ledger.positions_of, [submission_key("thc-1", e["submission_id"]) for e in envelopes]
        )
        assert len(held) == 10


async def test_garbage_of_any_shape_is_refused_with_reasons(exchange: Running) -> None:
    key = await exchange.register("thc-2")
    c = exchange.rt.settings.consortium
    js = exchange.rt.nc.jetstream()
    good = build_envelope(
        institution="thc-2",
        key=key,
        sent_at=datetime.now(UTC),
        items=[observation_item(resident(7), "g1")],
    )
    sub = await exchange.rt.nc.subscribe(receipt_subject(c, "thc-2"))

    async def answer(data: bytes) -> dict[str, Any]:
        await js.publish(submit_subject(c, "thc-2"), data)
        return json.loads((await sub.next_msg(timeout=30)).data)

    # Deeply nested JSON (a classic parser-crasher) and a signed envelope whose items are junk.
    deep = await answer(b"[" * 200_000 + b"]" * 200_000)
    assert deep["status"] == "rejected" and deep["problems"][0]["code"] == "envelope.too_deep"

    # Hypothesis draws the junk (a synchronous test gathers it; it is then sent in order):
    # random bytes, and envelopes correctly signed by the institution whose items are junk.
    examples: list[bytes] = []

    def signed(junk: list[Any]) -> bytes:
        try:
            return encode(
                build_envelope(institution="thc-2", key=key, items=junk, sent_at=datetime.now(UTC))
            )
        except ValueError:  # JSON that RFC 8785 cannot sign (huge integers): send it unsigned
            return encode({**good, "events": junk})

    @settings(max_examples=20, deadline=None, database=None)
    @given(
        st.binary(max_size=200)
        | st.builds(
            signed,
            st.lists(
                st.dictionaries(
                    st.sampled_from(["source_id", "kind", "payload", "x"]), json_values, max_size=4
                ),
                min_size=1,
                max_size=3,
            ),
        )
    )
    def collect(data: bytes) -> None:
        examples.append(data)

    collect()
    for data in examples:
        receipt = await answer(data)
        assert receipt["status"] == "rejected"
        assert receipt["problems"] and all(p["code"] and p["message"] for p in receipt["problems"])
    # The stream still flows: a good envelope after all that is accepted.
    assert (await answer(encode(good)))["status"] == "accepted"
