"""Each consent row of REGULATIONS.md as a scenario on the real servers: consents arrive as
submissions (and from the patient's own token), reads go through HTTP, and the audit log
holds every decision with its basis — which a regulator can have decided again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.resident_id import make_resident_id
from projections.render import entry_id
from tests.factories import T0, consent_item, observation_item, record_items, resident
from tests.integration.conftest import PROFILES, Running, refused_for
from tests.integration.consent_steps import (
    depression,
    disclosed,
    hiv_test,
    match,
    patient_of,
    redecided,
    study,
    treat,
)
from tests.integration.identity_steps import decide, merged_by_steward
from tests.integration.referral_steps import accepted, consortium, refused
from tests.integration.test_walking_skeleton import submit, token

# The scenario runs under each crypto profile (issue 17).
pytestmark = pytest.mark.parametrize("crypto_profile", PROFILES)


async def test_separate_consent_scope_purpose_and_withdrawal(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(81)
    pid = await patient_of(exchange, rid)
    # The township recorded a visit and only a GENERAL consent; the county treats them too.
    await accepted(
        exchange,
        "thc-east",
        [*record_items(rid, "thc-81"), consent_item(rid, "c-general", consent_type="general")],
    )
    await accepted(exchange, "county", record_items(rid, "cty-81")[1:])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # PIPL Art. 29: a general consent never stands in for a separate one.
        general = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert (
            general.status_code == 403
            and await refused_for(exchange, general) == "consent.general_only"
        )
        # Art. 23: a separate consent for the township only does not cover the county.
        await accepted(exchange, "thc-east", [consent_item(rid, "c-thc", scope=["thc-east"])])
        await exchange.settle()
        outside = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert (
            outside.status_code == 403 and await refused_for(exchange, outside) == "consent.scope"
        )
        # The scope widens: permitted, and the audit row names the consent.
        await accepted(
            exchange, "thc-east", [consent_item(rid, "c-both", scope=["thc-east", "county"])]
        )
        await exchange.settle()
        inside = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert inside.status_code == 200
        record = await exchange.rt.pool.fetchval(
            "SELECT record_text::jsonb FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
            inside.headers["x-request-id"],
        )
        consent_id = await exchange.rt.pool.fetchval(
            "SELECT consent_id FROM consents WHERE source_id = 'c-both'"
        )
        assert f"consent:{consent_id}" in record
        # Art. 14/30: research (under a registered project) with a treatment consent is
        # refused, with the reason.
        project = await study(exchange, "county")
        research = await http.get(
            f"/fhir/Patient/{pid}/$everything",
            headers=treat(exchange, purpose="HRESCH") | project,
        )
        assert (
            research.status_code == 403
            and await refused_for(exchange, research) == "consent.purpose"
        )
        # Nobody withdraws a consent for another patient, whatever institution records it.
        someone = resident(88)
        await accepted(exchange, "vc-peach", record_items(someone, "vc-88")[1:2])
        problem = (
            await submit(
                exchange,
                "vc-peach",
                [
                    {
                        "source_id": "w-wrong",
                        "kind": "consent_withdrawal",
                        "payload": {
                            "patient": {"resident_id": someone},
                            "consent": "thc-east/c-both",
                            "at": datetime.now(UTC).isoformat(),
                        },
                    }
                ],
            )
        )["problems"][0]
        assert problem["code"] == "consent.unknown"
        # Art. 15: the patient withdraws it with their own token; the next read is refused.
        patient = token(exchange, pid, "patient", "patient")
        withdrawn = await http.post(
            "/fhir/Consent", headers=patient, json={"withdraw": str(consent_id)}
        )
        assert withdrawn.status_code == 201, withdrawn.text
        after = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert (
            after.status_code == 403 and await refused_for(exchange, after) == "consent.withdrawn"
        )
        # Decided again from the ledger as it stood, each read gets its recorded decision.
        for answer in (general, outside, inside, research, after):
            again = await redecided(exchange, http, answer.headers["x-request-id"])
            assert again["same"] and again["policy_same"], again
        # What the permitted read disclosed is rebuilt from the ledger and matches the record.
        rebuilt = await disclosed(exchange, http, inside)
        assert rebuilt["matches_record"] and rebuilt["count"] == len(match(inside))
        # The past audit rows stay; the patient sees the consent as inactive now.
        consents = await http.get("/fhir/Consent", params={"patient": pid}, headers=patient)
        statuses = {r["id"]: r["status"] for r in match(consents)}
        assert statuses[str(consent_id)] == "inactive"


async def test_a_child_under_14_needs_a_recorded_guardian(exchange: Running) -> None:
    await consortium(exchange)
    today = datetime.now(UTC).date()
    child = make_resident_id("341122", date(today.year - 13, today.month, 1), 5)
    mother = resident(82)
    pid = await patient_of(exchange, child)
    await accepted(exchange, "county", record_items(child, "cty-82")[1:])
    # The child signed the consent themself: not valid (PIPL Art. 31).
    await accepted(exchange, "thc-east", [consent_item(child, "c-own")])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        own = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert await refused_for(exchange, own) == "consent.signer_under_14"
        # The mother signs, but she is not recorded as guardian yet: still refused.
        by_mother = consent_item(child, "c-mother")
        by_mother["payload"] |= {"signed_by": "guardian", "guardian": {"resident_id": mother}}
        await accepted(exchange, "thc-east", [by_mother])
        await exchange.settle()
        unrecorded = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert await refused_for(exchange, unrecorded) == "consent.guardian_not_recorded"
        # Recorded as guardian: her consent stands for the child.
        await accepted(
            exchange,
            "thc-east",
            [
                {
                    "source_id": "g-1",
                    "kind": "guardian",
                    "payload": {
                        "patient": {"resident_id": child},
                        "guardian": {"resident_id": mother},
                        "relationship": "parent",
                        "valid_from": (T0 - timedelta(days=4000)).isoformat(),
                    },
                }
            ],
        )
        await exchange.settle()
        valid = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert valid.status_code == 200, valid.text


async def test_minimum_necessary_sensitive_categories_only_by_name(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(83)
    pid = await patient_of(exchange, rid)
    await accepted(
        exchange,
        "county",
        [*record_items(rid, "cty-83")[1:], hiv_test(rid, "hiv-1"), depression(rid, "dep-1")],
    )
    await accepted(exchange, "thc-east", [consent_item(rid, "c-plain")])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        plain = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert plain.status_code == 200
        shown = match(plain)
        labels = {s["code"] for r in shown for s in r.get("meta", {}).get("security", [])}
        assert not labels & {"hiv", "psychiatric"}
        assert "7917-8" not in plain.text and "F32.9" not in plain.text
        # The response says what this decision withholds, the same whatever the record holds.
        [note] = [e["resource"] for e in plain.json()["entry"] if e["search"]["mode"] == "outcome"]
        withheld = note["issue"][0]["diagnostics"]
        assert "hiv" in withheld and "psychiatric" in withheld and "genetic" in withheld
        assert plain.json()["total"] == len(shown)  # counts what is returned, nothing more
        # A consent naming HIV results lets them through; psychiatric stays withheld.
        named = consent_item(rid, "c-hiv")
        named["payload"]["categories"] = [
            "demographics",
            "diagnosis",
            "lab",
            "vital",
            "encounter",
            "hiv",
        ]
        await accepted(exchange, "thc-east", [named])
        await exchange.settle()
        wider = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert "7917-8" in wider.text and "F32.9" not in wider.text
        # The patient reads their own record whole, sensitive parts included (PIPL Art. 45).
        patient = token(exchange, pid, "patient", "patient")
        mine = await http.get(f"/fhir/Patient/{pid}/$everything", headers=patient)
        assert mine.status_code == 200 and "7917-8" in mine.text and "F32.9" in mine.text
        # ... and who accessed it.
        audit = await http.get("/fhir/AuditEvent", headers=patient)
        agents = {
            e["resource"]["agent"][0]["who"]["identifier"]["value"] for e in audit.json()["entry"]
        }
        assert "dr-li" in agents


async def test_care_relationship_and_a_family_doctor_contract(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(84)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "thc-east", [*record_items(rid, "thc-84", consent=True)])
    await exchange.settle()
    village = treat(exchange, "dr-zhao", "vc-peach")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # A clinician whose institution does not treat the patient is refused.
        none = await http.get(f"/fhir/Patient/{pid}/$everything", headers=village)
        assert none.status_code == 403 and await refused_for(exchange, none) == "care.none"
        # The village clinic signs a family-doctor contract: now it treats the patient.
        now = datetime.now(UTC)
        await accepted(
            exchange,
            "vc-peach",
            [
                {
                    "source_id": "fd-1",
                    "kind": "care_contract",
                    "payload": {
                        "patient": {"resident_id": rid},
                        "doctor": "赵医生",
                        "valid_from": (now - timedelta(days=1)).isoformat(),
                        "valid_to": (now + timedelta(days=365)).isoformat(),
                    },
                }
            ],
        )
        await exchange.settle()
        contracted = await http.get(f"/fhir/Patient/{pid}/$everything", headers=village)
        assert contracted.status_code == 200, contracted.text

        # Contracts are primary care's, and a year long at most.
        def contract(source_id: str, days: int) -> dict[str, Any]:
            return {
                "source_id": source_id,
                "kind": "care_contract",
                "payload": {
                    "patient": {"resident_id": rid},
                    "doctor": "钱医生",
                    "valid_from": now.isoformat(),
                    "valid_to": (now + timedelta(days=days)).isoformat(),
                },
            }

        by_hospital = await refused(exchange, "county", [contract("fd-c", 300)])
        assert by_hospital["code"] == "care_contract.not_primary_care"
        too_long = await refused(exchange, "thc-east", [contract("fd-long", 730)])
        assert too_long["code"] == "care_contract.too_long"
        # Care comes from a visit the institution recorded, not from any item it filed.
        await accepted(exchange, "county", [observation_item(rid, "cty-obs-84")])
        await exchange.settle()
        county = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert await refused_for(exchange, county) == "care.none"


async def test_a_sealed_record_only_for_the_named_and_an_alert(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(85)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "county", [*record_items(rid, "cty-85", consent=True)])
    await exchange.settle()
    now = datetime.now(UTC).isoformat()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        assert (
            await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        ).status_code == 200
        # The county seals the record at once (病历封存): only its records officer reads it.
        await accepted(
            exchange,
            "county",
            [
                {
                    "source_id": "seal-1",
                    "kind": "seal",
                    "payload": {
                        "patient": {"resident_id": rid},
                        "readers": ["county/officer-wu"],
                        "reason": "医疗纠纷封存",
                        "at": now,
                    },
                }
            ],
        )
        await exchange.settle()
        sealed = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert sealed.status_code == 403 and await refused_for(exchange, sealed) == "record.sealed"
        officer = await http.get(
            f"/fhir/Patient/{pid}/$everything", headers=treat(exchange, "officer-wu")
        )
        assert officer.status_code == 200
        # A person of the same id at another institution is not the officer the seal names.
        namesake = await http.get(
            f"/fhir/Patient/{pid}/$everything", headers=treat(exchange, "officer-wu", "thc-east")
        )
        assert (
            namesake.status_code == 403 and await refused_for(exchange, namesake) == "record.sealed"
        )
        # Another institution cannot lift the county's seal.
        await accepted(
            exchange,
            "thc-east",
            [
                {
                    "source_id": "unseal-x",
                    "kind": "unseal",
                    "payload": {"patient": {"resident_id": rid}, "reason": "误操作", "at": now},
                }
            ],
        )
        await exchange.settle()
        assert (
            await refused_for(
                exchange,
                await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange)),
            )
            == "record.sealed"
        )
        # The refused attempt is an alert for the regulator.
        regulator = token(exchange, "reg-1", "bureau", "regulator")
        alerts = (await http.get("/audit/alerts", headers=regulator)).json()["alerts"]
        assert sorted((a["alert"], a["person"], a["institution"]) for a in alerts) == [
            ("sealed-record", "dr-li", "county"),
            ("sealed-record", "dr-li", "county"),
            ("sealed-record", "officer-wu", "thc-east"),
        ]
        # In an emergency the seal gives way to break-glass, and the regulator is told.
        er = treat(exchange, "dr-er", "thc-east", purpose="ETREAT")
        granted = await http.post(
            f"/fhir/Patient/{pid}/$break-glass",
            headers=er,
            json={"reason_code": "unconscious", "reason": "昏迷送入急诊，需查看既往病史"},
        )
        assert granted.status_code == 200
        assert (await http.get(f"/fhir/Patient/{pid}/$everything", headers=er)).status_code == 200
        alerts = (await http.get("/audit/alerts", headers=regulator)).json()["alerts"]
        assert ("sealed-record.break-glass", "dr-er") in {(a["alert"], a["person"]) for a in alerts}
        # Unsealed, the treating physician reads again.
        await accepted(
            exchange,
            "county",
            [
                {
                    "source_id": "unseal-1",
                    "kind": "unseal",
                    "payload": {"patient": {"resident_id": rid}, "reason": "纠纷已处理", "at": now},
                }
            ],
        )
        await exchange.settle()
        assert (
            await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        ).status_code == 200


async def test_a_patient_gives_consent_with_their_own_token(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(86)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "county", record_items(rid, "cty-86")[1:])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        assert (
            await refused_for(
                exchange,
                await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange)),
            )
            == "consent.none"
        )
        patient = token(exchange, pid, "patient", "patient")
        given = await http.post(
            "/fhir/Consent",
            headers=patient,
            json={
                "scope": ["county"],
                "purposes": ["TREAT"],
                "notice": "县医共体信息共享告知书 v1",
            },
        )
        assert given.status_code == 201, given.text
        assert (
            await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        ).status_code == 200
        # A consent naming an institution the consortium does not have is refused, with why.
        bad = await http.post("/fhir/Consent", headers=patient, json={"scope": ["nowhere"]})
        assert bad.status_code == 422
        # Someone else's token cannot give the patient's consent.
        clinician = token(exchange, "dr-li", "county", "physician")
        assert (await http.post("/fhir/Consent", headers=clinician, json={})).status_code == 403


async def test_a_read_as_it_stood_never_shows_an_identity_unmerged_since(exchange: Running) -> None:
    await consortium(exchange)
    a, b = resident(89), resident(90)
    pid_a = await patient_of(exchange, a)
    # A consents and is treated by the county; B is a different resident with records too.
    await accepted(exchange, "county", [*record_items(a, "cty-89", consent=True)])
    await accepted(exchange, "county", [observation_item(b, "b-only", value="199")])
    # B is merged into A by mistake (the steward approved it), then unmerged.
    await merged_by_steward(exchange, "county", "a40-x", a, b)
    await exchange.settle()
    merged_at = await exchange.rt.pool.fetchval("SELECT max(position) FROM ledger_clock")
    undone = await decide(exchange, "county/a40-x", "undo", "复核发现是两个人，撤销合并")
    assert undone.status_code == 200, undone.text
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # A's record as it stood while merged holds only A's own entries: B never consented.
        then = await http.get(
            f"/fhir/Patient/{pid_a}/$everything",
            headers=treat(exchange),
            params={"_at": str(merged_at)},
        )
        assert then.status_code == 200, then.text
        shown = {r["id"] for r in match(then)}
        assert str(entry_id("county", "b-only")) not in shown
        assert str(entry_id("county", "cty-89-sbp")) in shown  # A's own reading is there
        # And B's id, read as of then, does not open A's record either.
        pid_b = await patient_of(exchange, b)
        b_then = await http.get(
            f"/fhir/Patient/{pid_b}/$everything",
            headers=treat(exchange),
            params={"_at": str(merged_at)},
        )
        assert b_then.status_code == 403  # B has no consent of their own
