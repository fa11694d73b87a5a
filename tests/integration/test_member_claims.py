"""Issue: one member's claim bound the whole consortium. A seal is now placed only by an
institution that holds the patient's records, and the regulator can lift any seal; claims
that open a record beyond the recording institution — another institution or the whole
consortium, a sensitive category, research — count only once the patient confirms them in the
portal, or with the signed consent form recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.factories import consent_item, record_items, resident
from tests.integration.conftest import Running, refused_for
from tests.integration.consent_steps import hiv_test, match, patient_of, treat
from tests.integration.referral_steps import accepted, consortium, refused
from tests.integration.test_walking_skeleton import token


def seal(rid: str, source_id: str, reader: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "seal",
        "payload": {
            "patient": {"resident_id": rid},
            "readers": [reader],
            "reason": "医疗纠纷封存",
            "at": datetime.now(UTC).isoformat(),
        },
    }


async def test_a_seal_needs_a_record_holder_and_the_regulator_lifts_any(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(401)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "county", [*record_items(rid, "sl-401", consent=True)])
    # The attack: a village clinic that never saw the patient seals the record, which would
    # lock out the county that treats them.
    problem = await refused(exchange, "vc-peach", [seal(rid, "seal-x", "vc-peach/dr-x")])
    assert problem["code"] == "seal.not_holder"
    # The county, which holds the record, seals it (the legitimate path).
    await accepted(exchange, "county", [seal(rid, "seal-1", "county/officer-wu")])
    await exchange.settle()
    regulator = token(exchange, "reg-1", "bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        sealed = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert await refused_for(exchange, sealed) == "record.sealed"
        # The regulator sees the seal in force ...
        seals = (await http.get("/audit/seals", headers=regulator)).json()["seals"]
        assert [(s["patient_id"], s["institution"]) for s in seals] == [(pid, "county")]
        # ... a physician may not lift it, and the regulator must say why.
        doctor = await http.post(
            f"/audit/seals/{pid}/lift", headers=treat(exchange), json={"reason": "想看病历"}
        )
        assert doctor.status_code == 403
        short = await http.post(f"/audit/seals/{pid}/lift", headers=regulator, json={})
        assert short.status_code == 400
        lifted = await http.post(
            f"/audit/seals/{pid}/lift",
            headers=regulator,
            json={"reason": "纠纷已调解结案，依申请解除封存"},
        )
        assert lifted.status_code == 200, lifted.text
        assert [s["institution"] for s in lifted.json()["lifted"]] == ["county"]
        record = await exchange.rt.pool.fetchval(
            "SELECT record_text FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
            lifted.headers["x-request-id"],
        )
        assert json.loads(record)["patient_id"] == pid
        await exchange.settle()
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert read.status_code == 200
        assert (await http.get("/audit/seals", headers=regulator)).json()["seals"] == []
        # Nothing left to lift.
        again = await http.post(
            f"/audit/seals/{pid}/lift", headers=regulator, json={"reason": "再次解除封存的尝试"}
        )
        assert again.status_code == 404


async def test_a_broad_consent_a_member_recorded_counts_once_the_patient_confirms_it(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(411)
    pid = await patient_of(exchange, rid)
    # The county treats the patient; a township centre records, without the signed form, a
    # consent for the whole consortium, research and the HIV category.
    await accepted(exchange, "county", [*record_items(rid, "cf-411"), hiv_test(rid, "cf-hiv")])
    claim = consent_item(rid, "cf-claim", purposes=["TREAT", "HRESCH"], signed=False)
    claim["payload"]["categories"] = ["diagnosis", "lab", "hiv"]
    await accepted(exchange, "thc-east", [claim])
    await exchange.settle()
    patient = token(exchange, pid, "patient", "patient")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # The attack fails: the county's physician does not get the record on that claim ...
        county = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert await refused_for(exchange, county) == "consent.unconfirmed"
        research = await http.get(
            f"/fhir/Patient/{pid}/$everything", headers=treat(exchange, purpose="HRESCH")
        )
        assert research.status_code == 403
        # ... nor may a clinic confirm it for the patient.
        problem = await refused(
            exchange,
            "thc-east",
            [
                {
                    "source_id": "cf-fake",
                    "kind": "consent_confirmation",
                    "payload": {
                        "patient": {"resident_id": rid},
                        "consent": "thc-east/cf-claim",
                        "at": datetime.now(UTC).isoformat(),
                    },
                }
            ],
        )
        assert problem["code"] == "consent_confirmation.portal_only"
        # The patient sees it waiting for them, and confirms it in the portal.
        mine = (await http.get("/fhir/Consent", headers=patient, params={"patient": pid})).json()
        [proposed] = [e["resource"] for e in mine["entry"]]
        assert proposed["status"] == "proposed"
        confirmed = await http.post(
            "/fhir/Consent", headers=patient, json={"confirm": proposed["id"]}
        )
        assert confirmed.status_code == 201, confirmed.text
        await exchange.settle()
        mine = (await http.get("/fhir/Consent", headers=patient, params={"patient": pid})).json()
        assert [e["resource"]["status"] for e in mine["entry"]] == ["active"]
        # Now it counts in full: the county reads, HIV result included.
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert read.status_code == 200
        assert any(
            r.get("code", {}).get("coding", [{}])[0].get("code") == "7917-8" for r in match(read)
        )


async def test_a_consent_recorded_with_its_signed_form_counts_at_once(exchange: Running) -> None:
    await consortium(exchange)
    rid = resident(412)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "county", [*record_items(rid, "sf-412")])
    await accepted(exchange, "thc-east", [consent_item(rid, "sf-consent")])  # form recorded
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert read.status_code == 200
