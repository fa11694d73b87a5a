"""An institution's submissions are applied in the order it made them, even when they reach
the gateways out of it: a catch-up from a clinic's edge node ends in the middle of a run, two
gateways take neighbouring batches of one burst, a submission given back comes round again
after those behind it. A correction that reaches a gateway before the record it corrects is
not refused for good while an earlier submission of its institution is still on its way (the
submit stream, a work queue, still holds it): it is given back, and taken once the record is
stored. Another institution's message in flight holds nothing back; a correction of a record
nobody sent is refused as before."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from adapters.envelope import build_envelope, encode
from domain.submission import submission_key
from exchange.bootstrap import Endpoints, open_runtime
from exchange.ingest.gateway import Gateway
from exchange.servers.nats import GATEWAY_CONSUMER, receipt_subject, stream_name, submit_subject
from exchange.settings import Settings
from tests.factories import condition_item, resident
from tests.integration.conftest import Running


def retract(rid: str, source_id: str, record: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "retract",
        "payload": {"patient": {"resident_id": rid}, "record": record, "reason": "录入错误"},
    }


async def test_a_correction_that_overtakes_its_record_waits_for_it(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await Running(rt).register("vc-order")
        c, rid = settings.consortium, resident(61)
        js = rt.nc.jetstream()
        got: list[dict[str, Any]] = []

        async def on_receipt(msg: Any) -> None:
            got.append(json.loads(msg.data))

        await rt.nc.subscribe(receipt_subject(c, "vc-order"), cb=on_receipt)

        def signed(items: list[dict[str, Any]]) -> dict[str, Any]:
            return build_envelope(
                institution="vc-order", key=key, sent_at=datetime.now(UTC), items=items
            )

        async def publish(*envelopes: dict[str, Any]) -> None:
            for e in envelopes:
                await js.publish(
                    submit_subject(c, e["institution"]),
                    encode(e),
                    headers={"Nats-Msg-Id": e["submission_id"]},
                )

        async def stored_in_order(*envelopes: dict[str, Any]) -> None:
            keys = [submission_key(e["institution"], e["submission_id"]) for e in envelopes]
            positions = await rt.sync(rt.ledger.positions_of, keys)
            order = [positions[k] for k in keys]
            assert order == sorted(order)

        record = signed([condition_item(rid, "dx-o")])
        correction = signed([retract(rid, "dx-o-x", "dx-o")])
        await publish(record, correction)
        # Two gateways have taken one each; the one with the correction works first.
        sub = await js.pull_subscribe_bind(GATEWAY_CONSUMER, stream=stream_name(c, "SUBMIT"))
        [first] = await sub.fetch(1, timeout=5)
        [second] = await sub.fetch(1, timeout=5)
        assert first.headers and first.headers["Nats-Msg-Id"] == record["submission_id"]
        # Gateways that hold a waiting submission as long as this test needs.
        gateway, other = (
            Gateway(rt.ledger, rt.nc, c, executor=rt.executor, retry_delay=0.5, hold_for=10.0)
            for _ in range(2)
        )
        holding = asyncio.create_task(gateway.handle([second]))
        await asyncio.sleep(0.5)
        assert got == [] and not holding.done()  # held: neither answered nor refused
        held = await rt.pool.fetchval(
            "SELECT count(*) FROM ledger_rejected_submissions WHERE institution = 'vc-order'"
        )
        assert held == 0
        # The other gateway stores the record; the held correction is taken right after it.
        await other.handle([first])
        await asyncio.wait_for(holding, 5)
        assert [(r["submission_id"], r["status"]) for r in got] == [
            (record["submission_id"], "accepted"),
            (correction["submission_id"], "accepted"),
        ], [p["code"] for r in got for p in r.get("problems", [])]
        await stored_in_order(record, correction)

        # In one batch behind the record it corrects (a redelivery): put back in order.
        record2 = signed([condition_item(rid, "dx-p")])
        correction2 = signed([retract(rid, "dx-p-x", "dx-p")])
        await publish(record2, correction2)
        pair = await sub.fetch(2, timeout=5)
        await gateway.handle(list(reversed(pair)))
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [(r["submission_id"], r["status"]) for r in got[2:]] == [
            (record2["submission_id"], "accepted"),
            (correction2["submission_id"], "accepted"),
        ]

        # A correction of a record this institution never sent, with nothing of its own
        # before it on its way (another institution's message in flight at another gateway
        # holds nothing back): refused for good, as ever.
        other_key = await Running(rt).register("vc-other")
        elsewhere_envelope = build_envelope(
            institution="vc-other",
            key=other_key,
            sent_at=datetime.now(UTC),
            items=[condition_item(resident(62), "dx-z")],
        )
        stray = signed([retract(rid, "dx-q-x", "dx-never")])
        await publish(elsewhere_envelope, stray)
        [elsewhere] = await sub.fetch(1, timeout=5)  # held by another gateway, unanswered
        [msg] = await sub.fetch(1, timeout=5)
        await gateway.handle([msg])
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert got[4]["status"] == "rejected"
        assert [p["code"] for p in got[4]["problems"]] == ["correction.unknown_record"]
        await elsewhere.ack()

        # Held longer than a gateway holds one (shortened here): given back, it comes round
        # again and is taken once its record is stored.
        gateway.hold_for = 0.3
        record3 = signed([condition_item(rid, "dx-r")])
        correction3 = signed([retract(rid, "dx-r-x", "dx-r")])
        await publish(record3, correction3)
        [late_record] = await sub.fetch(1, timeout=5)
        [late_correction] = await sub.fetch(1, timeout=5)
        await gateway.handle([late_correction])
        assert len(got) == 5  # given back unanswered
        await other.handle([late_record])
        again = await sub.fetch(1, timeout=5)
        assert [(m.headers or {}).get("Nats-Msg-Id") for m in again] == [
            correction3["submission_id"]
        ]
        await gateway.handle(again)
        deadline = time.monotonic() + 10
        while len(got) < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [r["status"] for r in got[5:]] == ["accepted", "accepted"]
        await stored_in_order(record3, correction3)
        await sub.unsubscribe()
