"""Issue: one member's claim bound the whole consortium. A seal is now placed only by an
institution that holds the patient's records, and the regulator can lift any seal; claims
that open a record beyond the recording institution need the patient (below)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.factories import record_items, resident
from tests.integration.conftest import Running, refused_for
from tests.integration.consent_steps import patient_of, treat
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
