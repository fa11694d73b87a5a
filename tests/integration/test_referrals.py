"""Two-way referrals on the real servers: the whole loop through NATS and HTTP, refused steps,
an institution that was offline catching up on its notifications in order, and lookup by
resident ID. The deadlines are in test_referral_timers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.identity import RESIDENT_ID_SYSTEM
from exchange.servers.nats import NOTIFY_DAYS, notify_consumer, stream_name
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES, Running, refused_for
from tests.integration.referral_steps import (
    BACK,
    accepted,
    consortium,
    notes,
    referral,
    referral_rows,
    refused,
    step,
    until,
)
from tests.integration.test_walking_skeleton import token


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_the_closed_loop_up_and_back_with_follow_up(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(41)
    ref = "thc-east/REF-1"
    # A township doctor sees a hypertensive patient (who signed a separate consent) and
    # refers them up to the county hospital.
    await accepted(
        exchange, "thc-east", [*record_items(rid, "thc-41", consent=True), referral(rid, "REF-1")]
    )
    await exchange.settle()
    county_md = {**token(exchange, "dr-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    thc_md = {**token(exchange, "dr-zhang", "thc-east", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # The county is told, and finds the referral in its inbox, waiting, with a deadline.
        told = await notes(exchange, "county", 1)
        assert [(n["event"], n["status"], n["referral"]) for n in told] == [
            ("request", "requested", ref)
        ]
        inbox = (await http.get("/referrals/inbox", headers=county_md)).json()["referrals"]
        assert [(r["referral"], r["status"], r["direction"]) for r in inbox] == [
            (ref, "requested", "upward")
        ]
        requested = datetime.fromisoformat(inbox[0]["requested_at"])
        assert datetime.fromisoformat(inbox[0]["deadline"]) - requested == timedelta(hours=72)
        pid = inbox[0]["patient_id"]
        # Before it accepts, the county has no care relationship: the record stays closed.
        closed = await http.get(f"/fhir/Patient/{pid}/$everything", headers=county_md)
        assert await refused_for(exchange, closed) == "care.none"

        # The county accepts; the township is told; now the county may read the record.
        await accepted(
            exchange,
            "county",
            [step(rid, "CTY-A1", ref, "accept", department="心血管内科", by="李主任")],
        )
        await exchange.settle()
        assert [n["event"] for n in await notes(exchange, "thc-east", 1)] == ["accept"]
        record = await http.get(f"/fhir/Patient/{pid}/$everything", headers=county_md)
        assert record.status_code == 200, record.text
        # The audit names both grounds: the patient's consent and the accepted referral.
        reads = await exchange.rt.audit_writer.store.records_of(
            person="dr-li", token_id=None, start=requested, end=datetime.now(UTC)
        )
        read = [r for r in reads if r["action"] == "read"]
        assert [r["decision"] for r in read] == ["deny", "permit"]
        assert read[1]["legal_basis"].startswith("consent:")
        assert read[1]["care_basis"] == f"referral:{told[0]['referral_id']}"

        # The patient arrives, is treated, and is referred back with a plan.
        await accepted(exchange, "county", [step(rid, "CTY-A2", ref, "arrive")])
        await accepted(exchange, "county", [step(rid, "CTY-A3", ref, "complete")])
        await accepted(exchange, "county", [step(rid, "CTY-A4", ref, "back_refer", **BACK)])
        await exchange.settle()
        back = await notes(exchange, "thc-east", 3)
        assert [n["event"] for n in back] == ["arrive", "complete", "back_refer"]
        due = datetime.fromisoformat(back[-1]["follow_up_due"])
        assert due - datetime.fromisoformat(back[-1]["at"]) == timedelta(days=14)

        # The township sees the referral (ServiceRequest) and its history (Task), then follows
        # up within the 14 days: the loop closes.
        found = await http.get(
            "/fhir/ServiceRequest",
            headers=thc_md,
            params={"patient": pid, "referral-status": "back_referred"},
        )
        assert found.status_code == 200, found.text
        [sr] = [e["resource"] for e in found.json()["entry"]]
        assert sr["status"] == "active" and sr["priority"] == "routine"
        assert sr["requester"]["reference"] == "Organization/thc-east"
        assert sr["performer"] == [{"reference": "Organization/county"}]
        assert sr["reasonCode"][0]["coding"][0]["code"] == "I10"
        await accepted(
            exchange,
            "thc-east",
            [step(rid, "THC-F1", ref, "follow_up", notes="血压 138/86 mmHg，继续原方案")],
        )
        await exchange.settle()
        # The county, which took the middle steps itself, is told of the follow-up.
        assert [n["event"] for n in await notes(exchange, "county", 1)] == ["follow_up"]
        done = (await http.get(f"/fhir/ServiceRequest/{sr['id']}", headers=thc_md)).json()
        assert done["status"] == "completed"
        history = await http.get(
            "/fhir/Task", headers=county_md, params={"focus": f"ServiceRequest/{sr['id']}"}
        )
        tasks = [e["resource"] for e in history.json()["entry"]]
        assert [t["businessStatus"]["coding"][0]["code"] for t in tasks] == [
            "requested",
            "accepted",
            "arrived",
            "completed",
            "back_referred",
            "followed_up",
        ]
        assert [t["owner"]["reference"] for t in tasks] == [
            "Organization/thc-east",
            *["Organization/county"] * 4,
            "Organization/thc-east",
        ]
        back_task = tasks[4]
        assert {o["type"]["text"] for o in back_task["output"]} >= {
            "diagnosis",
            "results",
            "follow-up plan",
        }

        # An institution outside the referral sees none of it.
        vc_md = {**token(exchange, "dr-zhao", "vc-peach", "physician"), "X-Purpose-Of-Use": "TREAT"}
        assert (
            await http.get(f"/fhir/ServiceRequest/{sr['id']}", headers=vc_md)
        ).status_code == 404
        assert (await http.get("/fhir/ServiceRequest", headers=vc_md)).json()["total"] == 0

        # The county's statistics show the loop: one upward referral, accepted, followed up on
        # time.
        admin = token(exchange, "admin-1", "county", "admin")
        stats = (await http.get("/referrals/statistics", headers=admin)).json()
        assert [
            (m["direction"], m["from_institution"], m["to_institution"], m["n"])
            for m in stats["by_month"]
        ] == [("upward", "thc-east", "county", 1)]
        assert stats["follow_up"]["completion_rate"] == 1.0
        assert stats["follow_up"]["on_time"] == 1
        assert stats["time_to_accept_hours"][0]["accepted"] == 1
        # A regulator reads the statistics too (no patient in them); a patient does not.
        regulator = token(exchange, "reg-1", "county", "regulator")
        assert (await http.get("/referrals/statistics", headers=regulator)).status_code == 200
        patient = token(exchange, "00000000-0000-4000-8000-000000000001", "patient", "patient")
        assert (await http.get("/referrals/statistics", headers=patient)).status_code == 403

    # Replay: rebuilt from the ledger alone, the referral views are the same, row for row.
    before = await referral_rows(exchange)
    await exchange.rt.projection().rebuild()
    await exchange.settle()
    assert await referral_rows(exchange) == before and len(before[1]) == 6


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_every_refused_step_says_the_state_and_what_is_allowed(exchange: Running) -> None:
    await consortium(exchange)
    rid, other = resident(42), resident(43)
    ref = "thc-east/REF-2"
    await accepted(exchange, "thc-east", [*record_items(rid, "thc-42"), referral(rid, "REF-2")])
    await accepted(exchange, "thc-east", record_items(other, "thc-43"))
    # Only the receiver accepts; the sender is told who may.
    problem = await refused(exchange, "thc-east", [step(rid, "X1", ref, "accept")])
    assert problem["code"] == "referral.not_party" and "only the receiver" in problem["message"]
    # A third institution takes no part: it is told only that no such referral involves it
    # (the same answer whichever patient it names), learning nothing of the referral.
    problem = await refused(exchange, "vc-peach", [step(rid, "X2", ref, "accept")])
    assert problem["code"] == "referral.unknown"
    assert await refused(exchange, "vc-peach", [step(other, "X2b", ref, "accept")]) == {
        **problem,
        "source_id": "X2b",
    }
    # Steps out of order name the state and what is allowed there.
    problem = await refused(exchange, "county", [step(rid, "X3", ref, "complete")])
    assert problem["code"] == "referral.transition"
    assert "is requested" in problem["message"] and "accept (by the receiver)" in problem["message"]
    # The wrong patient, an unknown referral, a referral to itself or sideways are refused.
    problem = await refused(exchange, "county", [step(other, "X4", ref, "accept")])
    assert problem["code"] == "referral.patient_mismatch"
    problem = await refused(exchange, "county", [step(rid, "X5", "thc-east/NOPE", "accept")])
    assert problem["code"] == "referral.unknown"
    problem = await refused(exchange, "thc-east", [referral(rid, "REF-X", to="thc-east")])
    assert problem["code"] == "referral.to_self"
    await exchange.register("thc-west", "township_health_centre", "西城镇卫生院")
    problem = await refused(exchange, "thc-east", [referral(rid, "REF-Y", to="thc-west")])
    assert problem["code"] == "referral.same_level"
    problem = await refused(exchange, "thc-east", [referral(rid, "REF-Z", direction="downward")])
    assert problem["code"] == "referral.direction"
    # A rejection needs its reason (checked with the item), and then closes the referral.
    problem = await refused(exchange, "county", [step(rid, "X6", ref, "reject")])
    assert problem["code"] == "referral.reason_missing"
    await accepted(
        exchange,
        "county",
        [step(rid, "X7", ref, "reject", reason="本院床位已满", reason_code="no_capacity")],
    )
    problem = await refused(
        exchange, "thc-east", [step(rid, "X8", ref, "cancel", reason="患者改变主意")]
    )
    assert problem["code"] == "referral.transition" and "it is closed" in problem["message"]
    # A refused step stored nothing: the referral's history is the request and the rejection.
    await exchange.settle()
    rows = await exchange.rt.pool.fetch(
        "SELECT action FROM referral_events e JOIN referrals r USING (referral_id) "
        "WHERE r.reference = $1 ORDER BY version",
        ref,
    )
    assert [r["action"] for r in rows] == ["request", "reject"]
    rejections = await exchange.rt.pool.fetch(
        "SELECT rejection_reason FROM referrals WHERE reference = $1", ref
    )
    assert rejections[0]["rejection_reason"] == "本院床位已满"
    county_md = {**token(exchange, "dr-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # The statistics count the coded reason, never the free text.
        stats = await http.get("/referrals/statistics", headers=county_md)
        assert stats.json()["rejection_reasons"] == [{"reason_code": "no_capacity", "n": 1}]
        assert "床位" not in stats.text
        # Having rejected it, the county sees where the referral stands, not its content.
        [entry] = (await http.get("/fhir/ServiceRequest", headers=county_md)).json()["entry"]
        seen = entry["resource"]
        assert seen["extension"][0]["valueCode"] == "rejected"
        assert seen["meta"]["security"][0]["code"] == "REDACTED"
        assert "reasonCode" not in seen and "note" not in seen
        # The sender still sees all of it.
        thc_md = {
            **token(exchange, "dr-zhang", "thc-east", "physician"),
            "X-Purpose-Of-Use": "TREAT",
        }
        [mine] = (await http.get("/fhir/ServiceRequest", headers=thc_md)).json()["entry"]
        assert mine["resource"]["reasonCode"][0]["coding"][0]["code"] == "I10"


async def test_an_institution_offline_catches_up_in_order(exchange: Running) -> None:
    await consortium(exchange)
    info = await exchange.rt.nc.jetstream().stream_info(
        stream_name(exchange.rt.settings.consortium, "NOTIFY")
    )
    assert info.config.max_age >= NOTIFY_DAYS * 86_400 > 86_400  # a day away loses nothing
    # The township centre is offline while three of its referrals are answered.
    for n in range(3):
        rid = resident(50 + n)
        await accepted(
            exchange, "thc-east", [*record_items(rid, f"thc-5{n}"), referral(rid, f"REF-OFF-{n}")]
        )
        await accepted(
            exchange, "county", [step(rid, f"CTY-OFF-{n}", f"thc-east/REF-OFF-{n}", "accept")]
        )
        await accepted(
            exchange, "county", [step(rid, f"CTY-ARR-{n}", f"thc-east/REF-OFF-{n}", "arrive")]
        )
    await exchange.settle()
    # It reconnects: everything it missed arrives, in ledger order, and only once.
    got = await notes(exchange, "thc-east", 6)
    assert [(n["referral"], n["event"]) for n in got] == [
        (f"thc-east/REF-OFF-{n}", e) for n in range(3) for e in ("accept", "arrive")
    ]
    assert [n["position"] for n in got] == sorted(n["position"] for n in got)
    # Only once: the server holds nothing more for it, nor anything unacknowledged that would
    # come back after the consumer's ack wait; and a few more fetches find nothing.
    js = exchange.rt.nc.jetstream()
    stream = stream_name(exchange.rt.settings.consortium, "NOTIFY")

    async def all_acknowledged() -> bool:
        info = await js.consumer_info(stream, notify_consumer("thc-east"))
        return info.num_ack_pending == 0 and info.num_pending == 0

    assert await until(all_acknowledged)
    assert await notes(exchange, "thc-east", 1, fetches=5) == []
    # The county got each request.
    assert [n["event"] for n in await notes(exchange, "county", 3)] == ["request"] * 3


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_lookup_by_resident_id_finds_the_referred_patient(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(47)
    await accepted(exchange, "thc-east", [*record_items(rid, "thc-47"), referral(rid, "REF-L")])
    await exchange.settle()
    county_md = {**token(exchange, "dr-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        found = await http.get(
            "/fhir/Patient", headers=county_md, params={"identifier": f"{RESIDENT_ID_SYSTEM}|{rid}"}
        )
        pid = found.json()["entry"][0]["resource"]["id"]
        listed = await http.get(
            "/fhir/ServiceRequest",
            headers=county_md,
            params={"patient": pid, "referral-status": "requested", "date": "ge2020-01-01"},
        )
        assert [e["resource"]["identifier"][0]["value"] for e in listed.json()["entry"]] == [
            "thc-east/REF-L"
        ]
        none = await http.get(
            "/fhir/ServiceRequest", headers=county_md, params={"referral-status": "followed_up"}
        )
        assert none.json()["total"] == 0
        for bad_status in (
            {"status": "bogus"},
            {"status": "active,bogus"},
            {"referral-status": "completed,nope"},
        ):
            bad = await http.get("/fhir/ServiceRequest", headers=county_md, params=bad_status)
            assert bad.status_code == 400, bad_status
        # FHIR's status and the loop's state are separate parameters.
        active = await http.get(
            "/fhir/ServiceRequest", headers=county_md, params={"status": "active"}
        )
        assert active.json()["total"] == 1
        assert (
            await http.get(
                "/fhir/ServiceRequest", headers=county_md, params={"status": "completed"}
            )
        ).json()["total"] == 0
        # Date prefixes on instants: the request time is inside [ge t, le t], outside gt t.
        requested = (await http.get("/referrals/inbox", headers=county_md)).json()["referrals"][0][
            "requested_at"
        ]
        for prefix, hits in (("ge", 1), ("le", 1), ("eq", 1), ("gt", 0), ("lt", 0)):
            got = await http.get(
                "/fhir/ServiceRequest", headers=county_md, params={"date": prefix + requested}
            )
            assert got.json()["total"] == hits, prefix
