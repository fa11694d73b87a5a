"""Break-glass with brakes, over HTTP on a running exchange: every grant alerts the regulator
at once (a NATS subject and /audit/alerts) and sends the patient a notice through the patient
portal's durable notifications; one person past the policy's rate (3 an hour, 10 a day) is
refused, even with requests at once, and that alerts too; another physician is not held back."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx

from adapters.nats import NotificationClient
from consent.policy import AccessPolicy
from exchange.servers.nats import PORTAL, alert_subject
from exchange.settings import Settings
from tests.factories import record_items, resident
from tests.integration.conftest import Running, running
from tests.integration.test_walking_skeleton import submit, token

REASON = {"reason_code": "unconscious", "reason": "昏迷送入急诊，需核对既往病史与过敏史"}


async def residents(exchange: Running, first: int, n: int) -> list[str]:
    await exchange.register("thc-bg")
    ids = []
    for k in range(first, first + n):
        rid = resident(k)
        assert (await submit(exchange, "thc-bg", record_items(rid, f"bg{k}")))["status"] == (
            "accepted"
        )
        ids.append(str(exchange.rt.ledger.patient_id(rid)))
    await exchange.settle()
    return ids


async def glass(http: httpx.AsyncClient, headers: dict[str, str], pid: str) -> httpx.Response:
    return await http.post(f"/fhir/Patient/{pid}/$break-glass", headers=headers, json=REASON)


def code(response: httpx.Response) -> str:
    return str(response.json()["issue"][0]["details"]["coding"][0]["code"])


async def test_break_glass_alerts_notifies_and_stops_at_the_rate(exchange: Running) -> None:
    pids = await residents(exchange, 80, 5)
    heard: list[dict[str, Any]] = []

    async def on_alert(msg: Any) -> None:
        heard.append(json.loads(msg.data))

    sub = await exchange.rt.nc.subscribe(
        alert_subject(exchange.rt.settings.consortium), cb=on_alert
    )
    doctor = token(exchange, "dr-er", "county", "physician")
    colleague = token(exchange, "dr-icu", "county", "physician")
    regulator = token(exchange, "inspector-sun", "health-bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        for pid in pids[:3]:
            assert (await glass(http, doctor, pid)).status_code == 200
        # The fourth patient within the hour: refused, and that is an alert too.
        refused = await glass(http, doctor, pids[3])
        assert refused.status_code == 429 and code(refused) == "break_glass.rate_limited"
        etreat = {**doctor, "X-Purpose-Of-Use": "ETREAT"}
        assert (
            await http.get(f"/fhir/Patient/{pids[3]}/$everything", headers=etreat)
        ).status_code == 403
        assert (await http.get(f"/fhir/Patient/{pids[0]}/$everything", headers=etreat)).is_success
        # Another physician's emergency is not held back by this one's.
        assert (await glass(http, colleague, pids[3])).status_code == 200
        alerts = (await http.get("/audit/alerts", headers=regulator)).json()["alerts"]
    await asyncio.sleep(0.2)
    await sub.unsubscribe()

    expected = sorted(
        [("break_glass.granted", "dr-er")] * 3
        + [("break_glass.rate_limited", "dr-er"), ("break_glass.granted", "dr-icu")]
    )
    assert sorted((a["alert"], a["person"]) for a in alerts) == expected
    assert sorted((a["alert"], a["person"]) for a in heard) == expected  # and heard at once
    assert {a["patient_id"] for a in heard} == set(pids[:4])
    assert all(isinstance(a["seq"], int) for a in heard)

    # Each patient granted over is told, through the portal's durable notifications.
    portal = NotificationClient(exchange.rt.nc, exchange.rt.settings.consortium, PORTAL)
    # They are counted as waiting before anyone fetches them (`hie notifications` ends when
    # none waits), and none waits once fetched.
    for _ in range(100):
        if (await portal.waiting() or 0) >= 4:
            break
        await asyncio.sleep(0.05)
    notices = await portal.fetch(batch=20, timeout=2)
    assert await portal.waiting() == 0
    await portal.close()
    told = sorted(
        (n["patient_id"], n["institution"]) for n in notices if n["kind"] == "break_glass"
    )
    assert told == sorted([(p, "county") for p in pids[:3]] + [(pids[3], "county")])
    assert all(n["reason_code"] == "unconscious" and "reason" not in n for n in notices)
    # ... and reads it in the portal with their own token; nobody else reads it.
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        own = await http.get(
            "/portal/notices", headers=token(exchange, pids[0], "patient", "patient")
        )
        assert own.status_code == 200
        [notice] = own.json()["notices"]
        assert (notice["kind"], notice["institution"], notice["reason_code"]) == (
            "break_glass",
            "county",
            "unconscious",
        )
        assert notice["expires_at"] and "reason_text" not in notice
        quiet = await http.get(
            "/portal/notices", headers=token(exchange, pids[4], "patient", "patient")
        )
        assert quiet.json()["notices"] == []
        doctor = await http.get(
            "/portal/notices", headers=token(exchange, "dr-er", "county", "physician")
        )
        assert doctor.status_code == 403


async def test_requests_at_once_cannot_pass_the_rate_together(exchange: Running) -> None:
    pids = await residents(exchange, 90, 6)
    doctor = token(exchange, "dr-rush", "county", "physician")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        answers = await asyncio.gather(*(glass(http, doctor, pid) for pid in pids))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 429, 429, 429]


async def test_the_daily_rate_and_the_policy_file(settings: Settings) -> None:
    policy = AccessPolicy(break_glass_per_hour=5, break_glass_per_day=6)
    async with running(replace(settings, access_policy=policy)) as exchange:
        pids = await residents(exchange, 100, 2)
        # Five grants earlier today (two hours ago and more): one more is allowed, not two.
        for hours in range(2, 7):
            await exchange.rt.pool.execute(
                "INSERT INTO break_glass_grants VALUES ($1, 'dr-night', 'county', $2, "
                "'unconscious', 'earlier today', $3, $4)",
                uuid4(),
                uuid4(),
                datetime.now(UTC) - timedelta(hours=hours),
                datetime.now(UTC) - timedelta(hours=hours - 4),
            )
        doctor = token(exchange, "dr-night", "county", "physician")
        async with httpx.AsyncClient(base_url=exchange.url) as http:
            assert (await glass(http, doctor, pids[0])).status_code == 200
            refused = await glass(http, doctor, pids[1])
        assert refused.status_code == 429
        assert "6 patients a day" in refused.json()["issue"][0]["details"]["text"]
