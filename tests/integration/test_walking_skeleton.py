"""The walking skeleton as a story: two institutions submit through NATS; a county physician
reads the combined record, is refused without consent, breaks the glass; the regulator finds
every decision in the audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.envelope import build_envelope
from adapters.nats import SubmitClient
from domain.identity import RESIDENT_ID_SYSTEM
from exchange.auth.tokens import TokenIssuer
from exchange.servers.audit_heads import verify_log
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES, Running, refused_for

# The scenario runs under each crypto profile (issue 17).
pytestmark = pytest.mark.parametrize("crypto_profile", PROFILES)


def token(running: Running, person: str, institution: str, role: str) -> dict[str, str]:
    issuer = TokenIssuer(running.rt.settings.secrets.token_key, running.rt.settings.profile)
    value, _ = issuer.issue(
        person=person, institution=institution, role=role, now=datetime.now(UTC)
    )
    return {"Authorization": f"Bearer {value}"}


async def submit(running: Running, institution: str, items: list[dict]) -> dict:
    envelope = build_envelope(
        institution=institution,
        items=items,
        key=running.keys[institution],
        sent_at=datetime.now(UTC),
    )
    client = SubmitClient(running.rt.nc, running.rt.settings.consortium, institution)
    return (await client.submit([envelope], wait=20))[envelope["submission_id"]]


async def test_consented_read_refusal_break_glass_and_audit(exchange: Running) -> None:
    # The consortium: a township health centre and the county hospital, each with its key.
    await exchange.register("thc-east", "township_health_centre", "东城镇卫生院")
    await exchange.register("county", "county_hospital", "县人民医院")
    consented, unconsented = resident(1), resident(2)

    # The township centre records a visit for both residents, and one resident's separate
    # consent; the county hospital sends its own visit for the consented resident.
    receipts = [
        await submit(exchange, "thc-east", record_items(consented, "thc-1", consent=True)),
        await submit(exchange, "thc-east", record_items(unconsented, "thc-2")),
        await submit(exchange, "county", record_items(consented, "cty-1")),
    ]
    assert [r["status"] for r in receipts] == ["accepted"] * 3
    assert all(r["positions"] and not r["repeat"] for r in receipts)
    await exchange.settle()

    doctor = token(exchange, "doctor-wang", "county", "physician")
    treat = {**doctor, "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # The physician finds the patient by resident ID ...
        found = await http.get(
            "/fhir/Patient",
            headers=treat,
            params={"identifier": f"{RESIDENT_ID_SYSTEM}|{consented}"},
        )
        assert found.status_code == 200, found.text
        patient_id = found.json()["entry"][0]["resource"]["id"]

        # ... and reads one record combined from both institutions, each entry naming its sender.
        record = await http.get(f"/fhir/Patient/{patient_id}/$everything", headers=treat)
        assert record.status_code == 200, record.text
        assert record.headers["content-type"].startswith("application/fhir+json")
        resources = [
            e["resource"] for e in record.json()["entry"] if e["search"]["mode"] == "match"
        ]
        senders = {r["meta"]["source"] for r in resources if r["resourceType"] != "Patient"}
        assert senders == {
            "urn:county-hie:institution:thc-east",
            "urn:county-hie:institution:county",
        }
        kinds = sorted(r["resourceType"] for r in resources)
        assert kinds == [
            "Condition",
            "Condition",
            "Encounter",
            "Encounter",
            "Observation",
            "Observation",
            "Patient",
        ]
        patient = resources[0]
        assert patient["resourceType"] == "Patient" and patient["name"][0]["text"] == "李建国"
        assert {i["system"] for i in patient["identifier"]} == {
            RESIDENT_ID_SYSTEM,
            "urn:county-hie:mrn:thc-east",
            "urn:county-hie:mrn:county",
        }

        # A resident the county has never cared for: its lookup answers as for an unknown
        # resident ID (nobody's presence is revealed), in a form or in the URL alike ...
        lookup = {"identifier": f"{RESIDENT_ID_SYSTEM}|{unconsented}"}
        unknown = {"identifier": f"{RESIDENT_ID_SYSTEM}|{resident(3)}"}
        hidden = await http.get("/fhir/Patient", headers=treat, params=lookup)
        absent = await http.post("/fhir/Patient/_search", headers=treat, data=unknown)
        assert hidden.status_code == absent.status_code == 200
        assert hidden.json()["total"] == absent.json()["total"] == 0

        def body(response: httpx.Response) -> dict[str, Any]:
            return {k: v for k, v in response.json().items() if k != "timestamp"}

        assert body(hidden) == body(absent)
        # ... but in an emergency it is found (by a form: the resident ID stays out of URLs).
        other = await http.post(
            "/fhir/Patient/_search", headers={**doctor, "X-Purpose-Of-Use": "ETREAT"}, data=lookup
        )
        other_id = other.json()["entry"][0]["resource"]["id"]
        # Without a consent the same physician is refused a TREAT read.
        refused = await http.get(f"/fhir/Patient/{other_id}/$everything", headers=treat)
        assert refused.status_code == 403
        # Told what can be done, not what the record holds; the audit keeps the reason.
        issue = refused.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "access.not_permitted"
        assert "break-glass" in issue["details"]["text"]
        assert "consent.none" not in refused.text and "no consent valid" not in refused.text
        assert await refused_for(exchange, refused) == "consent.none"
        assert "entry" not in refused.json()

        # ETREAT without a grant is refused too; a grant needs a written reason.
        etreat = {**doctor, "X-Purpose-Of-Use": "ETREAT"}
        assert (
            await http.get(f"/fhir/Patient/{other_id}/$everything", headers=etreat)
        ).status_code == 403
        no_reason = await http.post(
            f"/fhir/Patient/{other_id}/$break-glass",
            headers=doctor,
            json={"reason_code": "unconscious"},
        )
        assert no_reason.status_code == 400
        granted = await http.post(
            f"/fhir/Patient/{other_id}/$break-glass",
            headers=doctor,
            json={"reason_code": "unconscious", "reason": "送医时昏迷，需紧急查看既往病史与用药"},
        )
        assert granted.status_code == 200, granted.text
        emergency = await http.get(f"/fhir/Patient/{other_id}/$everything", headers=etreat)
        assert emergency.status_code == 200
        found = emergency.json()["entry"]
        assert len([e for e in found if e["search"]["mode"] == "match"]) == 4
        # The response says what the decision does not disclose (the sensitive classes).
        [note] = [e["resource"] for e in found if e["search"]["mode"] == "outcome"]
        assert note["issue"][0]["code"] == "suppressed" and "hiv" in note["issue"][0]["diagnostics"]

        # The regulator finds every decision about the unconsented patient in the audit,
        # in order: the lookup answered as unknown (refused), the emergency lookup, TREAT
        # denied, ETREAT denied, break-glass without a reason denied, glass broken, ETREAT
        # permitted.
        regulator = token(exchange, "inspector-zhao", "health-bureau", "regulator")
        audit = await http.get("/fhir/AuditEvent", headers=regulator, params={"patient": other_id})
        assert audit.status_code == 200, audit.text
        events = [e["resource"] for e in audit.json()["entry"]]
        summary = [
            (
                e["subtype"][0]["code"],
                e["outcome"],
                e.get("purposeOfEvent", [{}])[0].get("coding", [{}])[0].get("code"),
                bool(e.get("extension")),
            )
            for e in events
        ]
        assert summary == [
            ("lookup", "4", "TREAT", False),
            ("lookup", "0", "ETREAT", False),
            ("read", "4", "TREAT", False),
            ("read", "4", "ETREAT", False),
            ("break-glass", "4", "ETREAT", False),
            ("break-glass", "0", "ETREAT", True),
            ("read", "0", "ETREAT", True),
        ]
        assert all(e["agent"][0]["who"]["identifier"]["value"] == "doctor-wang" for e in events)

        # A physician cannot read the audit; a regulator cannot read clinical data.
        assert (
            await http.get("/fhir/AuditEvent", headers=doctor, params={"patient": other_id})
        ).status_code == 403
        reg_treat = {**regulator, "X-Purpose-Of-Use": "TREAT"}
        assert (
            await http.get(f"/fhir/Patient/{patient_id}/$everything", headers=reg_treat)
        ).status_code == 403
        # No token at all: 401; a malformed patient id: 404. Both refusals are audited too.
        assert (await http.get(f"/fhir/Patient/{patient_id}/$everything")).status_code == 401
        assert (
            await http.get("/fhir/Patient/not-an-id/$everything", headers=treat)
        ).status_code == 404
        refusals = await exchange.rt.pool.fetch(
            "SELECT record_text::jsonb->>'action' AS action, record_text::jsonb->'reasons'->0->>'code'"
            " AS code FROM audit_log WHERE seq > (SELECT max(seq) - 2 FROM audit_log) ORDER BY seq"
        )
        assert [(r["action"], r["code"]) for r in refusals] == [
            ("read.authenticate", "token.invalid"),
            ("read", "patient.not_found"),
        ]

    # The audit chain holds over everything recorded, hashed and signed under the profile:
    # the log records its hash and the signed heads name it (the submissions were accepted,
    # so signed as the profile's gateway requires: Ed25519, or DER SM2).
    assert (await verify_log(exchange.rt.pool, exchange.rt.head_signer())).ok
    profile = exchange.rt.settings.profile
    assert await exchange.rt.pool.fetchval("SELECT hash FROM audit_tree") == profile.hash_name
    head = await exchange.rt.pool.fetchval("SELECT note FROM audit_heads ORDER BY size DESC")
    assert head.startswith(f"county-hie/{exchange.rt.settings.consortium}/audit")
    assert head.split("\n", 1)[0].endswith("/sm3") == (profile.name == "gm")


async def test_no_data_leaves_when_the_audit_cannot_record_the_read(exchange: Running) -> None:
    await exchange.register("thc-east")
    rid = resident(3)
    assert (await submit(exchange, "thc-east", record_items(rid, "v", consent=True)))[
        "status"
    ] == "accepted"
    await exchange.settle()
    patient_id = exchange.rt.ledger.patient_id(rid)
    treat = {**token(exchange, "doctor-wang", "thc-east", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        path = f"/fhir/Patient/{patient_id}/$everything"
        assert (await http.get(path, headers=treat)).status_code == 200
        # The audit table becomes unwritable (as if its disk or its database failed) ...
        async with exchange.owner() as owner:
            await owner.execute("ALTER TABLE audit_log RENAME TO audit_log_away")
            try:
                failed = await http.get(path, headers=treat)
            finally:
                await owner.execute("ALTER TABLE audit_log_away RENAME TO audit_log")
        # ... so the read fails closed: no clinical data in the answer.
        assert failed.status_code == 503
        assert failed.json()["resourceType"] == "OperationOutcome"
        assert "Observation" not in failed.text and "entry" not in failed.json()
        # The audit is unchanged by the failed attempt and still holds together.
        assert (await verify_log(exchange.rt.pool, exchange.rt.head_signer())).ok
