"""What a sender sees: repeats answered with the original receipt, and every kind of bad
submission rejected with reasons and kept in the dead-letter stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from adapters.envelope import build_envelope, encode, new_private_key
from adapters.nats import SubmitClient
from domain.submission import Submission
from exchange.servers.nats import stream_name
from tests.factories import observation_item, patient_item, record_items, resident
from tests.integration.conftest import Running


def envelope(running: Running, institution: str, items: list[dict[str, Any]], **kw: Any) -> dict:
    key = kw.pop("key", None) or running.keys[institution]
    return build_envelope(
        institution=institution, items=items, key=key, sent_at=datetime.now(UTC), **kw
    )


async def send(running: Running, institution: str, envelopes: list[dict]) -> list[dict]:
    client = SubmitClient(running.rt.nc, running.rt.settings.consortium, institution)
    receipts = await client.submit(envelopes, wait=20)
    return [receipts[e["submission_id"]] for e in envelopes]


async def receipts_for(
    running: Running, institution: str, submission_id: str, count: int
) -> list[dict]:
    """Every receipt published for one submission, read straight off the receipts stream."""
    js = running.rt.nc.jetstream()
    stream = stream_name(running.rt.settings.consortium, "RECEIPTS")
    for _ in range(100):
        total = (await js.stream_info(stream)).state.messages
        found = [json.loads((await js.get_msg(stream, seq)).data) for seq in range(1, total + 1)]
        found = [r for r in found if r["submission_id"] == submission_id]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} receipts, found {len(found)}")


async def accepted_in_ledger(running: Running) -> list[tuple[str, str]]:
    events = await running.rt.sync(running.rt.ledger.read, 0, 10_000)
    return [
        (e.institution, e.submission_id) for _, e in events if isinstance(e, Submission.Accepted)
    ]


async def test_a_repeated_submission_appends_nothing_and_gets_the_original_receipt(
    exchange: Running,
) -> None:
    await exchange.register("thc-a")
    env = envelope(exchange, "thc-a", record_items(resident(5), "v1"))

    # First send: accepted at a ledger position.
    [first] = await send(exchange, "thc-a", [env])
    assert first["status"] == "accepted" and first["repeat"] is False

    # The sender, unsure, sends it again: it gets the original receipt back.
    again = await send(exchange, "thc-a", [env])
    assert again == [first]

    # Redeliveries the broker did not de-duplicate (no Nats-Msg-Id, as after its window),
    # back to back, are answered by the gateway from the ledger: repeats at the original position.
    js = exchange.rt.nc.jetstream()
    for _ in range(2):
        await js.publish(f"hie.{exchange.rt.settings.consortium}.submit.thc-a", encode(env))
    receipts = await receipts_for(exchange, "thc-a", env["submission_id"], count=3)
    for receipt in receipts[1:]:
        assert receipt["status"] == "accepted" and receipt["repeat"] is True
        assert receipt["positions"] == first["positions"]
    assert await accepted_in_ledger(exchange) == [("thc-a", env["submission_id"])]

    # The same source records under a NEW submission id are refused by the ledger itself.
    renamed = envelope(exchange, "thc-a", record_items(resident(5), "v1"), submission_id="other-id")
    [refused] = await send(exchange, "thc-a", [renamed])
    assert refused["status"] == "rejected"
    assert {p["code"] for p in refused["problems"]} == {"item.source_id_held"}
    assert {p["source_id"] for p in refused["problems"]} == {"v1-pat", "v1-enc", "v1-dx", "v1-sbp"}
    assert len(await accepted_in_ledger(exchange)) == 1


async def test_bad_submissions_are_rejected_with_reasons_and_kept(exchange: Running) -> None:
    await exchange.register("thc-b")
    await exchange.register("thc-c")
    js = exchange.rt.nc.jetstream()
    subject = f"hie.{exchange.rt.settings.consortium}.submit.thc-b"
    good = record_items(resident(7), "ok")

    # A bad signature: signed with a key that is not the registered one.
    forged = envelope(exchange, "thc-b", good, key=new_private_key(exchange.rt.settings.profile))
    # A sender naming another institution than its subject.
    impostor = envelope(exchange, "thc-c", good)
    # A bad resident ID (wrong check digit) in one item, and a malformed payload in another.
    bad_id = "11010519491231002" + ("1" if resident(9)[-1] != "1" else "2")
    items = [
        patient_item(bad_id, "p-1"),
        observation_item(resident(9), "o-1"),
        {"source_id": "o-2", "kind": "observation", "payload": {"patient": {}}},
    ]
    invalid = envelope(exchange, "thc-b", items)

    receipts = await send(exchange, "thc-b", [forged, invalid])
    assert receipts[0]["status"] == "rejected"
    assert [p["code"] for p in receipts[0]["problems"]] == ["signature.invalid"]
    problems = receipts[1]["problems"]
    assert receipts[1]["status"] == "rejected"
    by_item = {(p.get("item"), p["field"]): p["code"] for p in problems}
    assert by_item[(0, "payload.patient.resident_id")] == "resident_id.check_digit"
    assert by_item[(2, "payload.patient")] == "patient.no_identifier"
    assert (2, "payload.code") in by_item and 1 not in {i for i, _ in by_item}
    # No receipt or problem repeats the patient's ID number.
    assert bad_id not in json.dumps(receipts)

    # The impostor publishes on thc-b's subject an envelope from thc-c.
    await js.publish(subject, encode(impostor), headers={"Nats-Msg-Id": "impostor-1"})
    # An unknown institution, and bytes that are not JSON.
    await js.publish(
        f"hie.{exchange.rt.settings.consortium}.submit.nobody",
        encode(envelope(exchange, "thc-b", good)),
        headers={"Nats-Msg-Id": "x-1"},
    )
    await js.publish(subject, b"\xff\xfe not json", headers={"Nats-Msg-Id": "garbage-1"})

    # Every rejected submission is kept in the dead-letter stream, with its reasons.
    dead = stream_name(exchange.rt.settings.consortium, "DEADLETTER")
    for _ in range(100):
        info = await js.stream_info(dead)
        if info.state.messages >= 5:
            break
        await asyncio.sleep(0.1)
    assert info.state.messages == 5
    kept = [await js.get_msg(dead, seq) for seq in range(1, 6)]
    reasons = sorted(
        sorted({p["code"] for p in json.loads(m.headers["Hie-Problems"])}) for m in kept
    )
    assert reasons == sorted(
        [
            ["signature.invalid"],  # forged
            ["missing", "patient.no_identifier", "resident_id.check_digit"],  # invalid items
            [
                "sender.mismatch",
                "signature.invalid",
            ],  # impostor: thc-c's envelope on thc-b's subject
            ["institution.unknown", "sender.mismatch"],  # unregistered subject
            ["envelope.not_json"],  # garbage
        ]
    )
    assert kept[0].data == encode(forged)  # kept verbatim, for the sender to fix and resend
    assert await accepted_in_ledger(exchange) == []
