"""Replays, as an attacker (or a confused adapter) would send them through NATS: a rejected
submission is never accepted later, whatever the ledger holds by then; an envelope dated far
ahead of the exchange's clock, or older than the consortium allows, is refused with a code
that says so; and a forged envelope cannot make a genuine submission id unusable."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.envelope import build_envelope, encode, new_private_key
from tests.factories import condition_item, record_items, resident
from tests.integration.conftest import Running


async def send(
    exchange: Running,
    institution: str,
    envelope: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Publish these bytes as a new message (a fresh Nats-Msg-Id, so JetStream's duplicate
    window does not swallow a replay), with these headers besides, and return the receipt it
    gets."""
    consortium = exchange.rt.settings.consortium
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_receipt(msg: Any) -> None:
        receipt = json.loads(msg.data)
        if receipt.get("submission_id") == envelope["submission_id"] and not got.done():
            got.set_result(receipt)

    sub = await exchange.rt.nc.subscribe(f"hie.{consortium}.receipt.{institution}", cb=on_receipt)
    try:
        await exchange.rt.nc.jetstream().publish(
            f"hie.{consortium}.submit.{institution}",
            encode(envelope),
            headers={**(headers or {}), "Nats-Msg-Id": uuid.uuid4().hex},
        )
        return await asyncio.wait_for(got, 20)
    finally:
        await sub.unsubscribe()


def codes(receipt: dict[str, Any]) -> list[str]:
    return [p["code"] for p in receipt.get("problems", [])]


def retract(rid: str, source_id: str, record: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "retract",
        "payload": {"patient": {"resident_id": rid}, "record": record, "reason": "录入错误"},
    }


def envelope(exchange: Running, institution: str, items: list[dict[str, Any]], **kw: Any) -> Any:
    sent_at = kw.pop("sent_at", datetime.now(UTC))
    return build_envelope(
        institution=institution, items=items, key=exchange.keys[institution], sent_at=sent_at, **kw
    )


async def test_a_rejected_submission_is_never_accepted_later(exchange: Running) -> None:
    await exchange.register("thc-replay")
    rid = resident(51)
    # A retraction of a record the ledger does not hold yet: rejected.
    early = envelope(exchange, "thc-replay", [retract(rid, "dx-r-x", "dx-r")])
    first = await send(exchange, "thc-replay", early)
    assert first["status"] == "rejected" and codes(first) == ["correction.unknown_record"]
    # The record arrives; the same retraction, replayed byte for byte, would now pass the
    # ledger's checks — and is refused, as its first answer was final.
    record = envelope(exchange, "thc-replay", [condition_item(rid, "dx-r")])
    assert (await send(exchange, "thc-replay", record))["status"] == "accepted"
    replayed = await send(exchange, "thc-replay", early)
    assert replayed["status"] == "rejected" and codes(replayed) == ["submission.rejected_before"]
    # Sent again under a new submission id, the retraction is taken.
    fresh = envelope(
        exchange, "thc-replay", [retract(rid, "dx-r-x", "dx-r")], submission_id="retract-2"
    )
    assert (await send(exchange, "thc-replay", fresh))["status"] == "accepted"
    # And the refusal is kept by codes only.
    row = await exchange.rt.pool.fetchrow(
        "SELECT institution, submission_id, codes FROM ledger_rejected_submissions "
        "WHERE submission_id = $1",
        early["submission_id"],
    )
    assert dict(row) == {
        "institution": "thc-replay",
        "submission_id": early["submission_id"],
        "codes": ["correction.unknown_record"],
    }


async def test_sent_at_from_the_future_or_too_long_ago_is_refused(exchange: Running) -> None:
    await exchange.register("thc-clock")
    now = datetime.now(UTC)
    ahead = envelope(
        exchange, "thc-clock", record_items(resident(52), "f"), sent_at=now + timedelta(minutes=6)
    )
    stale = envelope(
        exchange, "thc-clock", record_items(resident(53), "s"), sent_at=now - timedelta(days=31)
    )
    offline = envelope(
        exchange, "thc-clock", record_items(resident(54), "o"), sent_at=now - timedelta(days=29)
    )
    slightly = envelope(
        exchange, "thc-clock", record_items(resident(55), "k"), sent_at=now + timedelta(minutes=2)
    )
    assert codes(await send(exchange, "thc-clock", ahead)) == ["envelope.sent_at_future"]
    assert codes(await send(exchange, "thc-clock", stale)) == ["envelope.sent_at_stale"]
    # A village clinic back after four weeks offline, and a clock two minutes fast: taken.
    assert (await send(exchange, "thc-clock", offline))["status"] == "accepted"
    assert (await send(exchange, "thc-clock", slightly))["status"] == "accepted"


async def test_a_forgery_cannot_spend_a_genuine_submission_id(exchange: Running) -> None:
    """Refusals of envelopes the institution did not sign are not final: otherwise anyone
    could publish garbage under the ids an institution will use."""
    await exchange.register("thc-victim")
    genuine = envelope(exchange, "thc-victim", record_items(resident(56), "v"))
    forged = build_envelope(
        institution="thc-victim",
        items=record_items(resident(57), "x"),
        key=new_private_key(exchange.rt.settings.profile),  # the profile's kind, not its key
        sent_at=datetime.now(UTC),
        submission_id=genuine["submission_id"],
    )
    assert codes(await send(exchange, "thc-victim", forged)) == ["signature.invalid"]
    assert (await send(exchange, "thc-victim", genuine))["status"] == "accepted"


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=st.lists(st.integers(0, 3), min_size=2, max_size=7))
async def test_no_replayed_envelope_is_accepted_twice_or_after_rejection(
    exchange: Running, order: list[int]
) -> None:
    """Four envelopes (a record, its retraction, and an amendment and a retraction that name
    a record never sent), sent and replayed in any order: each id is accepted at most once
    as new, and never after it was rejected."""
    code = f"thc-p{uuid.uuid4().hex[:8]}"
    await exchange.register(code)
    rid = resident(60 + len(order))
    dx = condition_item(rid, "dx-p")
    envelopes = [
        envelope(exchange, code, [dx]),
        envelope(exchange, code, [retract(rid, "dx-p-x", "dx-p")]),
        envelope(exchange, code, [{**condition_item(rid, "dx-q2"), "amends": "dx-q"}]),
        envelope(exchange, code, [retract(rid, "dx-q-x", "dx-q")]),
    ]
    history: dict[str, list[tuple[str, bool]]] = {}
    for n in order:
        receipt = await send(exchange, code, envelopes[n])
        history.setdefault(envelopes[n]["submission_id"], []).append(
            (receipt["status"], bool(receipt.get("repeat")))
        )
    for answers in history.values():
        assert sum(1 for status, repeat in answers if status == "accepted" and not repeat) <= 1
        if ("rejected", False) in answers:
            first = answers.index(("rejected", False))
            assert all(status == "rejected" for status, _ in answers[first:])
