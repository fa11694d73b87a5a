"""Time through a village clinic's edge node, on the real gateway: a submission relayed by the
edge carries its stamp (when the edge took it, on the clinic's clock), from which the age and
the clock limits count; a clinic whose clock runs ahead is accepted and flagged in its receipt,
in /metrics and in the regulator's data-quality view, and so is one whose clock runs behind, by
what its edge measured from its receipts; a stamp that cannot be read is refused
for good; and a submission without one is decided as it always was.

The submissions are published straight to the hub's submit subject with the header, as the
hub's stream receives them when it sources a clinic's edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from adapters.nats import EDGE_CLOCK_OFFSET, EDGE_RECEIVED
from tests.factories import record_items, resident
from tests.integration.conftest import Running
from tests.integration.referral_steps import until
from tests.integration.test_data_quality import by_code, figures
from tests.integration.test_operations import scrape, value
from tests.integration.test_replays import codes, envelope, send

CLINIC_TIME = timezone(timedelta(hours=8))  # the clinic's clocks show Beijing time


def stamped(at: datetime) -> dict[str, str]:
    """The header a clinic's edge adds to what it takes, on the clinic's clock."""
    return {EDGE_RECEIVED: at.astimezone(CLINIC_TIME).isoformat()}


async def clock_row(exchange: Running, institution: str) -> dict[str, Any] | None:
    row = await exchange.rt.pool.fetchrow(
        "SELECT * FROM ledger_edge_clocks WHERE institution = $1", institution
    )
    return dict(row) if row is not None else None


async def measured(exchange: Running, institution: str, stamp: datetime) -> dict[str, Any]:
    """The institution's edge clock once the gateway has kept the measurement of its
    submission stamped ``stamp`` (kept while its receipt is sent, not before it)."""

    async def kept() -> dict[str, Any] | None:
        row = await clock_row(exchange, institution)
        return row if row is not None and row["stamp"] == stamp else None

    row = await until(kept)
    assert row is not None, f"no measurement of {institution}'s edge clock was kept"
    return row  # type: ignore[no-any-return]


async def test_a_week_offline_or_longer_is_not_stale_from_the_edges_stamp(
    exchange: Running,
) -> None:
    await exchange.register("vc-week", "village_clinic", "桃源村卫生室")
    now = datetime.now(UTC)
    # The clinic signed a visit a week ago and its edge took it a minute later; the link came
    # back only now.
    week = now - timedelta(days=7)
    receipt = await send(
        exchange,
        "vc-week",
        envelope(exchange, "vc-week", record_items(resident(301), "w1"), sent_at=week),
        stamped(week + timedelta(minutes=1)),
    )
    assert receipt["status"] == "accepted", receipt.get("problems")
    assert datetime.fromisoformat(receipt["edge_received_at"]) == week + timedelta(minutes=1)
    assert receipt["edge_received_at"].endswith("+08:00")  # as the clinic's edge wrote it
    assert "clock_skew_s" not in receipt and "warnings" not in receipt
    # Six weeks offline: older than the 30 days the exchange's clock allows, but signed a
    # minute before the edge took it — accepted with the stamp, refused without.
    long_ago = now - timedelta(weeks=6)
    held = envelope(exchange, "vc-week", record_items(resident(302), "w2"), sent_at=long_ago)
    assert (await send(exchange, "vc-week", held, stamped(long_ago)))["status"] == "accepted"
    bare = envelope(exchange, "vc-week", record_items(resident(303), "w3"), sent_at=long_ago)
    assert codes(await send(exchange, "vc-week", bare)) == ["envelope.sent_at_stale"]
    # Signed 31 days before the edge took it: stale, measured on the clinic's own clock.
    before = envelope(
        exchange,
        "vc-week",
        record_items(resident(304), "w4"),
        sent_at=long_ago - timedelta(days=31),
    )
    assert codes(await send(exchange, "vc-week", before, stamped(long_ago))) == [
        "envelope.sent_at_stale"
    ]
    # The last measurement is kept: the stamp six weeks before the exchange received it, a
    # clock not flagged (time held at the edge is not a fast clock).
    row = await measured(exchange, "vc-week", long_ago)
    assert row["flagged_since"] is None
    assert row["last_flagged_at"] is None
    assert row["ahead_s"] == pytest.approx(-timedelta(weeks=6).total_seconds(), abs=60)


async def test_a_slow_clinic_clock_is_flagged_by_what_its_edge_measured(
    exchange: Running,
) -> None:
    await exchange.register("vc-slow", "village_clinic", "柳村卫生室")
    # The clinic's clock runs 20 minutes slow; its submission waited an hour at the edge. The
    # stamp alone cannot tell the two apart; the edge's measure from its receipts can.
    slow = datetime.now(UTC) - timedelta(minutes=20) - timedelta(hours=1)
    visit = envelope(exchange, "vc-slow", record_items(resident(321), "s1"), sent_at=slow)
    receipt = await send(
        exchange, "vc-slow", visit, stamped(slow) | {EDGE_CLOCK_OFFSET: "-1199.700"}
    )
    assert receipt["status"] == "accepted", receipt.get("problems")
    assert receipt["clock_skew_s"] == pytest.approx(-1199.7, abs=0.01)
    [warning] = receipt["warnings"]
    assert warning["code"] == "edge.clock_behind" and "20 minutes behind" in warning["message"]
    row = await measured(exchange, "vc-slow", slow)
    assert row["flagged_since"] is not None and row["ahead_s"] == pytest.approx(-1199.7)
    clock = by_code(await figures(exchange))["vc-slow"]["edge_clock"]
    assert clock["clock_skew_s"] == pytest.approx(-1199.7) and clock["flagged_in_window"]
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        _, found = await scrape(exchange, http)
    assert value(found, "hie_edge_clock_ahead_seconds", institution="vc-slow") == pytest.approx(
        -1199.7
    )
    edge = "hie_edge_submissions_total"
    assert value(found, edge, institution="vc-slow", clock="behind") == 1
    # An edge's measure the stamp disproves (it says an hour slow; the stamp is in step) is
    # not believed, and an unreadable one is ignored: in step, never refused for it.
    now = datetime.now(UTC)
    for n, offset in enumerate(("-3600", "soon")):
        later = envelope(exchange, "vc-slow", record_items(resident(322 + n), f"s{n + 2}"))
        receipt = await send(exchange, "vc-slow", later, stamped(now) | {EDGE_CLOCK_OFFSET: offset})
        assert receipt["status"] == "accepted" and "clock_skew_s" not in receipt


async def test_an_hour_fast_clinic_is_accepted_and_flagged_everywhere(exchange: Running) -> None:
    await exchange.register("vc-fast", "village_clinic", "杏林村卫生室")
    # The clinic's clock runs an hour fast: it signs and its edge stamps an hour ahead.
    fast = datetime.now(UTC) + timedelta(hours=1)
    visit = envelope(exchange, "vc-fast", record_items(resident(311), "f1"), sent_at=fast)
    receipt = await send(exchange, "vc-fast", visit, stamped(fast))
    assert receipt["status"] == "accepted", receipt.get("problems")
    assert receipt["clock_skew_s"] == pytest.approx(3600, abs=30)
    [warning] = receipt["warnings"]
    assert warning["code"] == "edge.clock_ahead"
    assert "60 minutes ahead" in warning["message"] and "clock right" in warning["message"]
    await measured(exchange, "vc-fast", fast)
    # Without the stamp, the same clock's submission is from the future.
    later = envelope(exchange, "vc-fast", record_items(resident(312), "f2"), sent_at=fast)
    assert codes(await send(exchange, "vc-fast", later)) == ["envelope.sent_at_future"]
    await exchange.settle()

    # /metrics: the clock an hour ahead, and the relayed submission counted as from a clock
    # ahead (the unstamped one was not relayed by an edge).
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        text, found = await scrape(exchange, http)
    ahead = value(found, "hie_edge_clock_ahead_seconds", institution="vc-fast")
    assert ahead == pytest.approx(3600, abs=30)
    edge = "hie_edge_submissions_total"
    assert value(found, edge, institution="vc-fast", clock="ahead") == 1
    assert value(found, edge, institution="vc-fast", clock="in_step") == 0
    assert resident(311) not in text

    # The regulator's data-quality view: the clock ahead since this submission, flagged in
    # the window.
    clock = by_code(await figures(exchange))["vc-fast"]["edge_clock"]
    assert clock["clock_skew_s"] == pytest.approx(3600, abs=30)
    assert clock["flagged_in_window"] is True
    assert clock["flagged_since"] == clock["measured_at"] == clock["last_flagged_at"]
    assert datetime.fromisoformat(clock["edge_received_at"]) == fast
    # An institution that never sent through an edge has no edge clock.
    assert all(
        r["edge_clock"] is None
        for r in (await figures(exchange))["institutions"]
        if r["institution"] != "vc-fast"
    )

    # The clinic sets its clock right: the next relayed submission is in step, the gauge
    # falls to 0, and the view still shows that the clock ran ahead within the window.
    now = datetime.now(UTC)
    right = envelope(exchange, "vc-fast", record_items(resident(313), "f3"), sent_at=now)
    receipt = await send(exchange, "vc-fast", right, stamped(now))
    assert receipt["status"] == "accepted" and "clock_skew_s" not in receipt
    await measured(exchange, "vc-fast", now)
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        _, found = await scrape(exchange, http)
    assert value(found, "hie_edge_clock_ahead_seconds", institution="vc-fast") == 0
    assert value(found, edge, institution="vc-fast", clock="in_step") == 1
    assert value(found, "hie_edge_held_seconds_count") >= 1
    clock = by_code(await figures(exchange))["vc-fast"]["edge_clock"]
    assert clock["clock_skew_s"] is None and clock["flagged_since"] is None
    assert clock["flagged_in_window"] is True and clock["last_flagged_at"] is not None


async def test_an_unreadable_stamp_is_refused_for_good(exchange: Running) -> None:
    await exchange.register("vc-stamp", "village_clinic", "梨园村卫生室")
    # An edge that wrote something other than a time, and one that left out the offset.
    for n, wrong in enumerate(("yesterday", "2026-12-05T17:30:00")):
        visit = envelope(exchange, "vc-stamp", record_items(resident(321 + n), f"s{n}"))
        refused = await send(exchange, "vc-stamp", visit, {EDGE_RECEIVED: wrong})
        assert refused["status"] == "rejected" and "edge_received_at" not in refused
        [problem] = refused["problems"]
        assert problem["code"] == "envelope.edge_stamp" and problem["field"] == EDGE_RECEIVED
        assert wrong not in problem["message"]
    # Kept like any other refusal: the same submission with a good stamp is not taken later.
    row = await exchange.rt.pool.fetchrow(
        "SELECT codes FROM ledger_rejected_submissions WHERE submission_id = $1",
        visit["submission_id"],
    )
    assert row is not None and row["codes"] == ["envelope.edge_stamp"]
    good = datetime.now(UTC)
    again = await send(exchange, "vc-stamp", visit, stamped(good))
    assert codes(again) == ["submission.rejected_before"]
    assert "edge_received_at" in again  # its stamp read this time, and answered
    # Nothing was measured of the unreadable stamps; the good one was.
    assert (await measured(exchange, "vc-stamp", good))["flagged_since"] is None


async def test_without_a_stamp_nothing_changes(exchange: Running) -> None:
    await exchange.register("thc-direct")
    now = datetime.now(UTC)
    visit = envelope(exchange, "thc-direct", record_items(resident(341), "d1"), sent_at=now)
    receipt = await send(exchange, "thc-direct", visit)
    assert receipt["status"] == "accepted"
    assert set(receipt) == {
        "submission_id",
        "institution",
        "status",
        "received_at",
        "positions",
        "repeat",
    }
    assert await clock_row(exchange, "thc-direct") is None
    assert by_code(await figures(exchange))["thc-direct"]["edge_clock"] is None
