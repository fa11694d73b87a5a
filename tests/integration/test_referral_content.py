"""A referral's clinical content on the real servers goes through the decision point like every
other read: a seal, a withdrawn consent and the end of a party's care relationship each
withhold it (status and routing stay, so the loop keeps running), and the audit record of
each read holds the decision on every referral it returned, with its reasons and basis.
Synthetic data only."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.referral import ReferralPolicy
from exchange.settings import Settings
from tests.factories import consent_item, patient_item, record_items, resident
from tests.integration.conftest import Running, running
from tests.integration.consent_steps import patient_of, treat
from tests.integration.referral_steps import BACK, accepted, consortium, referral, step, until
from tests.integration.test_walking_skeleton import token

# What would show the request's content (the sender's) or the back-referral's (the receiver's).
REQUEST_TEXT = ("血压控制不佳", "高血压病史", "氨氯地平 5mg")
BACK_TEXT = ("动态血压", "两周内社区随访", "缬沙坦")


async def audit_of(running: Running, answer: httpx.Response) -> dict[str, Any]:
    record = await running.rt.pool.fetchval(
        "SELECT record_text FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
        answer.headers["x-request-id"],
    )
    return json.loads(record)  # type: ignore[no-any-return]


def shows(answer: httpx.Response, texts: tuple[str, ...]) -> bool:
    return all(t in answer.text for t in texts)


def codes(record: dict[str, Any]) -> list[str]:
    return [r["code"] for r in record["reasons"]]


def redacted(resource: dict[str, Any]) -> bool:
    return any(s["code"] == "REDACTED" for s in resource.get("meta", {}).get("security", []))


class Reader:
    """One physician's view of one referral over HTTP: the ServiceRequest and its Tasks."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str], sr_id: str) -> None:
        self.http, self.headers, self.sr_id = http, headers, sr_id

    async def request(self) -> httpx.Response:
        answer = await self.http.get(f"/fhir/ServiceRequest/{self.sr_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return answer

    async def history(self) -> httpx.Response:
        answer = await self.http.get(
            "/fhir/Task", headers=self.headers, params={"focus": f"ServiceRequest/{self.sr_id}"}
        )
        assert answer.status_code == 200, answer.text
        return answer


def steps(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    """The Tasks of a history, by the step's state."""
    tasks = [e["resource"] for e in answer.json()["entry"]]
    return {t["businessStatus"]["coding"][0]["code"]: t for t in tasks}


async def referred_back(running: Running, rid: str, ref: str, prefix: str) -> str:
    """The county takes the referral through to the back-referral; the ServiceRequest id."""
    for n, (action, extra) in enumerate(
        [("accept", {"department": "心血管内科"}), ("arrive", {}), ("complete", {})]
    ):
        await accepted(running, "county", [step(rid, f"{prefix}-{n}", ref, action, **extra)])
    await accepted(running, "county", [step(rid, f"{prefix}-b", ref, "back_refer", **BACK)])
    await running.settle()
    return str(
        await running.rt.pool.fetchval(
            "SELECT referral_id FROM referrals WHERE reference = $1", ref
        )
    )


async def test_both_parties_see_the_content_during_the_referral_and_the_audit_says_why(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(91)
    ref = "thc-east/REF-C1"
    # The township saw the patient, who signed a separate consent, and refers them up.
    await accepted(
        exchange, "thc-east", [*record_items(rid, "thc-91", consent=True), referral(rid, "REF-C1")]
    )
    await exchange.settle()
    sr_id = str(await exchange.rt.pool.fetchval("SELECT referral_id FROM referrals"))
    consent_id = await exchange.rt.pool.fetchval("SELECT consent_id FROM consents")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        county = Reader(http, treat(exchange, "dr-wang", "county"), sr_id)
        thc = Reader(http, treat(exchange, "dr-zhang", "thc-east"), sr_id)
        # The county, deciding whether to take the patient on, reads why they are referred:
        # under the patient's consent, the referral being its care relationship for it.
        deciding = await county.request()
        assert all(t in deciding.text for t in REQUEST_TEXT) and not redacted(deciding.json())
        record = await audit_of(exchange, deciding)
        assert codes(record)[:3] == ["referral.party", "consent.permit", "care.relationship"]
        assert record["consent_id"] == str(consent_id)
        assert record["care_basis"] == f"referral:{sr_id}"
        [group] = record["referral_content"]
        assert group["referrals"] == [sr_id] and group["party"] == "receiver"
        assert group["decision"] == "permit" and group["shown"] == ["receiver", "sender"]
        assert group["legal_basis"] == f"consent:{consent_id}"
        # It takes the patient through to the back-referral; the township reads the result to
        # follow up, on its own care relationship (the visit it recorded) and the consent.
        await referred_back(exchange, rid, ref, "CTY-C1")
        back = steps(await thc.history())["back_referred"]
        assert {o["type"]["text"] for o in back["output"]} >= {"diagnosis", "follow-up plan"}
        pid = await patient_of(exchange, rid)
        searched = await http.get(
            "/fhir/ServiceRequest", headers=thc.headers, params={"patient": pid}
        )
        assert searched.status_code == 200 and searched.json()["total"] == 1
        record = await audit_of(exchange, searched)
        assert record["care_basis"].startswith("encounter:")
        # The county, in its care window, still reads the request it is treating for.
        during = await county.request()
        assert all(t in during.text for t in REQUEST_TEXT)


async def test_a_seal_by_another_institution_hides_referral_content_from_those_it_does_not_name(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(92)
    ref = "thc-east/REF-C2"
    await accepted(
        exchange, "thc-east", [*record_items(rid, "thc-92", consent=True), referral(rid, "REF-C2")]
    )
    sr_id = await referred_back(exchange, rid, ref, "CTY-C2")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        thc = Reader(http, treat(exchange, "dr-zhang", "thc-east"), sr_id)
        county = Reader(http, treat(exchange, "dr-wang", "county"), sr_id)
        named = Reader(http, treat(exchange, "dr-li", "county"), sr_id)
        assert shows(await thc.history(), BACK_TEXT)
        # The village clinic, which holds records of the patient too, seals the patient's
        # record (病历封存): only the county's dr-li may read it.
        await accepted(exchange, "vc-peach", record_items(rid, "vc-92"))
        await accepted(
            exchange,
            "vc-peach",
            [
                {
                    "source_id": "seal-c2",
                    "kind": "seal",
                    "payload": {
                        "patient": {"resident_id": rid},
                        "readers": ["county/dr-li"],
                        "reason": "医疗纠纷封存",
                        "at": datetime.now(UTC).isoformat(),
                    },
                }
            ],
        )
        await exchange.settle()
        # Neither party's other physicians read any of the content, their own writing
        # included; where the referral stands, and each step, they still see.
        for reader in (thc, county):
            request = await reader.request()
            resource = request.json()
            assert redacted(resource) and "reasonCode" not in resource and "note" not in resource
            assert resource["extension"][0]["valueCode"] == "back_referred"
            assert not any(t in request.text for t in (*REQUEST_TEXT, *BACK_TEXT))
            history = await reader.history()
            assert list(steps(history)) == [
                "requested",
                "accepted",
                "arrived",
                "completed",
                "back_referred",
            ]
            assert all(redacted(t) and "output" not in t for t in steps(history).values())
            assert not any(t in history.text for t in (*REQUEST_TEXT, *BACK_TEXT))
            # The audit says why, and the regulator is alerted, as for any read of the record.
            record = await audit_of(exchange, history)
            assert "record.sealed" in codes(record) and record["alert"] == "sealed-record"
            [group] = record["referral_content"]
            assert group["shown"] == [] and group["decision"] == "deny"
        # The physician the seal names reads all of it.
        assert shows(await named.request(), REQUEST_TEXT)
        assert shows(await named.history(), BACK_TEXT)
        # The loop still closes: the township follows the patient up.
        await accepted(exchange, "thc-east", [step(rid, "THC-C2", ref, "follow_up")])
        await exchange.settle()
        assert (await thc.request()).json()["status"] == "completed"
    regulator = token(exchange, "reg-1", "bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        alerts = (await http.get("/audit/alerts", headers=regulator)).json()["alerts"]
    assert {("sealed-record", "dr-zhang"), ("sealed-record", "dr-wang")} <= {
        (a["alert"], a["person"]) for a in alerts
    }


async def test_a_withdrawn_consent_withholds_the_other_partys_referral_content(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(93)
    ref = "thc-east/REF-C3"
    pid = await patient_of(exchange, rid)
    await accepted(
        exchange,
        "thc-east",
        [*record_items(rid, "thc-93"), consent_item(rid, "c-93"), referral(rid, "REF-C3")],
    )
    sr_id = await referred_back(exchange, rid, ref, "CTY-C3")
    consent_id = await exchange.rt.pool.fetchval("SELECT consent_id FROM consents")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        thc = Reader(http, treat(exchange, "dr-zhang", "thc-east"), sr_id)
        county = Reader(http, treat(exchange, "dr-wang", "county"), sr_id)
        assert shows(await county.request(), REQUEST_TEXT)
        assert shows(await thc.history(), BACK_TEXT)
        # The patient withdraws their consent with their own token.
        patient = token(exchange, pid, "patient", "patient")
        withdrawn = await http.post(
            "/fhir/Consent", headers=patient, json={"withdraw": str(consent_id)}
        )
        assert withdrawn.status_code == 201, withdrawn.text
        await exchange.settle()
        # The county, still in its care window, no longer reads the township's request...
        request = await county.request()
        assert redacted(request.json()) and not any(t in request.text for t in REQUEST_TEXT)
        record = await audit_of(exchange, request)
        assert "consent.withdrawn" in codes(record)
        [group] = record["referral_content"]
        assert group["shown"] == ["receiver"] and group["decision"] == "deny"
        # ... though the back-referral it wrote itself is still its own to read.
        own = steps(await county.history())["back_referred"]
        assert not redacted(own) and own["output"]
        # The township no longer reads the county's back-referral, only its own request.
        history = await thc.history()
        assert redacted(steps(history)["back_referred"])
        assert not any(t in history.text for t in BACK_TEXT)
        assert "consent.withdrawn" in codes(await audit_of(exchange, history))
        mine = await thc.request()
        assert not redacted(mine.json()) and all(t in mine.text for t in REQUEST_TEXT)
        # The loop still runs: the follow-up is recorded and shows.
        await accepted(exchange, "thc-east", [step(rid, "THC-C3", ref, "follow_up")])
        await exchange.settle()
        assert "followed_up" in steps(await thc.history())


async def test_without_a_consent_the_receiver_sees_where_the_referral_stands_only(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(94)
    await accepted(exchange, "thc-east", [*record_items(rid, "thc-94"), referral(rid, "REF-C4")])
    await exchange.settle()
    sr_id = str(await exchange.rt.pool.fetchval("SELECT referral_id FROM referrals"))
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        county = Reader(http, treat(exchange, "dr-wang", "county"), sr_id)
        # The referral is no legal basis of its own: with no consent covering the county,
        # it sees who refers whom, and how urgently, to decide; not the clinical content.
        request = await county.request()
        resource = request.json()
        assert redacted(resource) and resource["priority"] == "routine"
        assert not any(t in request.text for t in REQUEST_TEXT)
        assert "consent.none" in codes(await audit_of(exchange, request))
        # The sender reads back what it wrote.
        mine = await Reader(http, treat(exchange, "dr-zhang", "thc-east"), sr_id).request()
        assert all(t in mine.text for t in REQUEST_TEXT)
        # The county can still take it on.
        await accepted(exchange, "county", [step(rid, "CTY-C4", "thc-east/REF-C4", "accept")])
        await exchange.settle()
        assert (await county.request()).json()["extension"][0]["valueCode"] == "accepted"


QUICK = ReferralPolicy(care_after_completion=timedelta(seconds=3))


@pytest.fixture
async def quick(settings: Settings) -> AsyncIterator[Running]:
    """An exchange whose referral care lasts three seconds after a party's part ends."""
    async with running(dataclasses.replace(settings, referral_policy=QUICK)) as ex:
        yield ex


async def test_the_sender_loses_the_back_referral_once_it_has_no_basis(quick: Running) -> None:
    await consortium(quick)
    rid = resident(95)
    ref = "thc-east/REF-C5"
    # The township records no visit of its own: its only care relationship is the referral.
    await accepted(
        quick,
        "thc-east",
        [patient_item(rid, "thc-95-pat"), consent_item(rid, "c-95"), referral(rid, "REF-C5")],
    )
    sr_id = await referred_back(quick, rid, ref, "CTY-C5")
    async with httpx.AsyncClient(base_url=quick.url) as http:
        thc = Reader(http, treat(quick, "dr-zhang", "thc-east"), sr_id)
        # Waiting to follow the patient up, it reads the back-referral on the referral's basis.
        history = await thc.history()
        assert all(t in history.text for t in BACK_TEXT)
        assert (await audit_of(quick, history))["care_basis"] == f"referral:{sr_id}"
        # It follows up: the loop closes, and a few seconds on (the policy's span) the
        # back-referral is no longer its to read.
        await accepted(quick, "thc-east", [step(rid, "THC-C5", ref, "follow_up")])
        await quick.settle()

        async def withheld() -> httpx.Response | None:
            answer = await thc.history()
            return answer if redacted(steps(answer)["back_referred"]) else None

        later = await until(withheld, timeout=20)
        assert later is not None, "the sender still reads the back-referral"
        assert not any(t in later.text for t in BACK_TEXT)
        assert list(steps(later))[-1] == "followed_up"
        record = await audit_of(quick, later)
        assert "care.none" in codes(record) and record["care_basis"] is None
        # What it wrote itself stays its own.
        assert shows(await thc.request(), REQUEST_TEXT)
