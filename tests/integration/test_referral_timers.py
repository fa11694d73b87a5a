"""Referral deadlines on the real servers: an unanswered emergency referral expires (also
across a restart), an overdue follow-up is flagged, and care ends after completion."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from domain.referral import ReferralPolicy
from exchange.bootstrap import Endpoints, open_runtime, serve
from exchange.settings import Settings
from tests.factories import record_items, resident
from tests.integration.conftest import Running, refused_for, running
from tests.integration.referral_steps import (
    BACK,
    accepted,
    consortium,
    notes,
    referral,
    refused,
    step,
    until,
)
from tests.integration.test_walking_skeleton import token

FAST = ReferralPolicy(
    accept_within={
        "emergency": timedelta(seconds=2),
        "urgent": timedelta(hours=24),
        "routine": timedelta(hours=72),
    },
    follow_up_within=timedelta(seconds=2),
    care_after_completion=timedelta(seconds=3),
)


@pytest.fixture
async def fast(settings: Settings) -> AsyncIterator[Running]:
    """An exchange whose emergency acceptance, follow-up and care spans last seconds."""
    quick = dataclasses.replace(settings, referral_policy=FAST, scheduler_seconds=0.2)
    async with running(quick) as ex:
        yield ex


async def test_an_unanswered_emergency_referral_expires_and_both_are_told(fast: Running) -> None:
    await consortium(fast)
    rid = resident(44)
    ref = "thc-east/REF-E"
    await accepted(
        fast,
        "thc-east",
        [*record_items(rid, "thc-44"), referral(rid, "REF-E", urgency="emergency")],
    )

    async def expired() -> bool:
        status = await fast.rt.pool.fetchval(
            "SELECT status FROM referrals WHERE reference = $1", ref
        )
        return status == "expired"  # type: ignore[no-any-return]

    assert await until(expired)
    # An acceptance after the deadline is refused: the referral is closed.
    problem = await refused(fast, "county", [step(rid, "LATE", ref, "accept")])
    assert problem["code"] == "referral.transition" and "expired" in problem["message"]
    assert [n["event"] for n in await notes(fast, "thc-east", 1)] == ["expire"]
    assert [n["event"] for n in await notes(fast, "county", 2)] == ["request", "expire"]


async def test_a_restart_loses_no_timer(settings: Settings) -> None:
    quick = dataclasses.replace(settings, referral_policy=FAST, scheduler_seconds=0.2)
    endpoints = Endpoints(quick.database_url or "", quick.nats_url or "")
    rid = resident(45)
    # Run one: the referral is made, and the exchange stops before its deadline.
    async with open_runtime(quick, endpoints) as rt:
        running = Running(rt)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(rt, stop, http=False))
        await consortium(running)
        await accepted(
            running,
            "thc-east",
            [*record_items(rid, "thc-45"), referral(rid, "REF-R", urgency="emergency")],
        )
        await running.settle()
        stop.set()
        await task
        assert await rt.pool.fetchval("SELECT status FROM referrals") == "requested"
    await asyncio.sleep(2.5)  # the deadline passes while nothing runs
    # Run two: the scheduler finds the deadline in the ledger's view and records the expiry.
    async with open_runtime(quick, endpoints) as rt:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(rt, stop, http=False))
        try:

            async def expired() -> bool:
                return await rt.pool.fetchval("SELECT status FROM referrals") == "expired"  # type: ignore[no-any-return]

            assert await until(expired, 10)
            events = await rt.pool.fetch(
                "SELECT action, institution FROM referral_events ORDER BY version"
            )
            assert [(e["action"], e["institution"]) for e in events] == [
                ("request", "thc-east"),
                ("expire", None),
            ]
        finally:
            stop.set()
            await task


async def test_overdue_follow_up_is_flagged_and_care_ends_after_completion(fast: Running) -> None:
    await consortium(fast)
    rid = resident(46)
    ref = "thc-east/REF-O"
    await accepted(
        fast, "thc-east", [*record_items(rid, "thc-46", consent=True), referral(rid, "REF-O")]
    )
    county_md = {**token(fast, "dr-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    thc_md = {**token(fast, "dr-zhang", "thc-east", "physician"), "X-Purpose-Of-Use": "TREAT"}
    for n, action in enumerate(("accept", "arrive", "complete")):
        await accepted(fast, "county", [step(rid, f"O{n}", ref, action)])
    await fast.settle()
    pid = await fast.rt.pool.fetchval("SELECT patient_id FROM referrals")
    async with httpx.AsyncClient(base_url=fast.url) as http:
        # Just completed: the county still treats the patient, for the configured span.
        assert (
            await http.get(f"/fhir/Patient/{pid}/$everything", headers=county_md)
        ).status_code == 200
        await accepted(fast, "county", [step(rid, "O3", ref, "back_refer", **BACK)])

        async def flagged() -> bool:
            return bool(await fast.rt.pool.fetchval("SELECT overdue FROM referrals"))

        assert await until(flagged)
        # The township's outbox shows the overdue follow-up; the county's statistics count it.
        outbox = (await http.get("/referrals/outbox", headers=thc_md)).json()["referrals"]
        assert [(r["status"], r["follow_up_overdue"]) for r in outbox] == [("back_referred", True)]
        stats = (await http.get("/referrals/statistics", headers=county_md)).json()
        assert stats["follow_up"]["overdue_open"] == 1
        # Late, the follow-up is still recorded, and counted as not on time.
        await accepted(fast, "thc-east", [step(rid, "O4", ref, "follow_up")])
        await fast.settle()
        stats = (await http.get("/referrals/statistics", headers=county_md)).json()
        assert stats["follow_up"] == {
            **stats["follow_up"],
            "followed_up": 1,
            "on_time": 0,
            "completion_rate": 1.0,
        }
        # Three seconds after completion the county's care relationship has ended.
        await asyncio.sleep(3.2)
        after = await http.get(f"/fhir/Patient/{pid}/$everything", headers=county_md)
        assert await refused_for(fast, after) == "care.none"
