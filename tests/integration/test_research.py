"""Issue: a consent naming research let every physician read the record for research, with
no project and with names and resident IDs. Now a research read names a project the
regulator registered (ethics approval, period, member institutions, categories) and gets the
record de-identified for that project."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from tests.factories import consent_item, record_items, resident
from tests.integration.conftest import Running, refused_for
from tests.integration.consent_steps import match, patient_of, treat
from tests.integration.referral_steps import accepted, consortium
from tests.integration.test_walking_skeleton import token

NOW = datetime.now(UTC)
PROJECT = {
    "code": "HT-COHORT-2026",
    "title": "县域高血压队列研究",
    "ethics_approval": "县人民医院伦理委员会 2026-017",
    "institutions": ["county"],
    "categories": ["diagnosis", "lab", "vital"],
    "starts": (NOW - timedelta(days=1)).isoformat(),
    "ends": (NOW + timedelta(days=365)).isoformat(),
}


def research(running: Running, project: str | None, institution: str = "county") -> dict:
    headers = treat(running, "dr-study", institution, purpose="HRESCH")
    return headers | ({"X-Research-Project": project} if project else {})


async def test_research_reads_need_a_registered_project_and_are_de_identified(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(501)
    pid = await patient_of(exchange, rid)
    consent = consent_item(rid, "rs-consent", purposes=["TREAT", "HRESCH"])
    await accepted(exchange, "county", [*record_items(rid, "rs-501"), consent])
    await exchange.settle()
    regulator = token(exchange, "reg-1", "bureau", "regulator")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        everything = f"/fhir/Patient/{pid}/$everything"
        # The attack: a research read on the consent alone, with no project.
        bare = await http.get(everything, headers=research(exchange, None))
        assert await refused_for(exchange, bare) == "research.no_project"
        # Only a regulator registers a project; a malformed one is refused by field.
        assert (
            await http.post("/research/projects", headers=treat(exchange), json=PROJECT)
        ).status_code == 403
        wrong = await http.post(
            "/research/projects", headers=regulator, json={**PROJECT, "categories": ["x"]}
        )
        assert wrong.status_code == 400 and "categories" in wrong.text
        made = await http.post("/research/projects", headers=regulator, json=PROJECT)
        assert made.status_code == 201
        again = await http.post("/research/projects", headers=regulator, json=PROJECT)
        assert again.status_code == 409
        listed = (await http.get("/research/projects", headers=treat(exchange))).json()
        assert [p["code"] for p in listed["projects"]] == ["HT-COHORT-2026"]
        # A member that does not read for the project is refused.
        outsider = await http.get(
            everything, headers=research(exchange, "HT-COHORT-2026", "thc-east")
        )
        assert outsider.status_code == 403
        # The legitimate path: the county's researcher gets the project's extract.
        read = await http.get(everything, headers=research(exchange, "HT-COHORT-2026"))
        assert read.status_code == 200, read.text
        text = read.text
        for leaked in (rid, pid, "李建国", "rs-501-MRN"):
            assert leaked not in text
        resources = match(read)
        assert resources and {r["resourceType"] for r in resources} <= {
            "Condition",
            "Observation",
        }
        # Dates moved: the real reading's date is not there.
        treat_read = await http.get(everything, headers=treat(exchange))
        real = {r.get("effectiveDateTime") for r in match(treat_read)} - {None}
        shown = {r.get("effectiveDateTime") for r in resources} - {None}
        assert real and shown and not real & shown
        # The audit names the project as the legal basis, and the regulator's re-decision
        # agrees with the recorded one.
        record = json.loads(
            await exchange.rt.pool.fetchval(
                "SELECT record_text FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
                read.headers["x-request-id"],
            )
        )
        assert record["legal_basis"].endswith(";research:HT-COHORT-2026")
        assert "de-identify" in record["obligations"]
        again_decided = await http.get(
            "/audit/redecide", headers=regulator, params={"seq": str(record["seq"])}
        )
        assert again_decided.json()["same"] is True, again_decided.json()
