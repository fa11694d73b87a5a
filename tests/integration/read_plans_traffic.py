"""Real traffic over every reading route of the app, for the plan test: a consortium, a
patient with records, a consent and an accepted referral, then the requests each role makes,
each answered as it should be (a route that refused would not have run its queries). Not
collected as tests."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from audit.postgres import AuditStore
from audit.writer import AuditWriter
from domain.identity import RESIDENT_ID_SYSTEM
from exchange.pages.app import create_app
from tests.factories import consent_item, record_items, resident
from tests.integration.conftest import Running
from tests.integration.read_plans_capture import CAPTURING, Captured, uncaptured
from tests.integration.referral_steps import accepted, consortium, referral, step
from tests.integration.test_walking_skeleton import token

RID = resident(171)


async def story(ex: Running) -> None:
    """The rows the routes read: one patient, records at two institutions, a referral."""
    await consortium(ex)
    research = consent_item(RID, "thc-171-research", purposes=["HRESCH"])
    await accepted(
        ex,
        "thc-east",
        [*record_items(RID, "thc-171", consent=True), research, referral(RID, "REF-P")],
    )
    await accepted(ex, "county", [step(RID, "cty-acc", "thc-east/REF-P", "accept")])
    await ex.settle()


async def drive(ex: Running, project: str = "PLAN-STUDY") -> list[Captured]:
    """Every reading route, as the roles that may use it; the statements their pools ran.
    ``project``: the research project's code the regulator registers (a new one each time
    the routes are driven again on the same database)."""
    rt = ex.rt
    # The app as the exchange composes it, with an audit writer of its own on the same pool,
    # whose group-commit task starts inside the capture (so its appends are captured too).
    writer = AuditWriter(AuditStore(rt.audit_writer.store.pool))
    app = create_app(dataclasses.replace(rt, audit_writer=writer).api_context(rt.portal()))
    seen: list[Captured] = []
    capture = CAPTURING.set(seen)
    try:
        assert rt.revocations is not None
        await rt.revocations.refresh()  # what every request's token check is kept by
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://plans"
        ) as http:
            await _requests(ex, http, project)
    finally:
        CAPTURING.reset(capture)
        await writer.close()
    return seen


async def _requests(ex: Running, http: httpx.AsyncClient, code: str) -> None:
    async def ok(method: str, url: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        answer = await http.request(method, url, headers=headers, **kw)
        assert answer.status_code in (200, 201), (method, url, answer.text[:300])
        return answer

    treat = {**token(ex, "dr-plan", "thc-east", "physician"), "X-Purpose-Of-Use": "TREAT"}
    found = await ok(
        "GET", "/fhir/Patient", treat, params={"identifier": f"{RESIDENT_ID_SYSTEM}|{RID}"}
    )
    pid = found.json()["entry"][0]["resource"]["id"]
    everything = f"/fhir/Patient/{pid}/$everything"
    await ok("GET", everything, treat)
    await ok("GET", f"/app/patients/{pid}", treat)  # the record page: and its institutions
    with uncaptured():
        position = await ex.rt.pool.fetchval("SELECT max(position) FROM ledger_clock")
    await ok("GET", everything, treat, params={"_at": str(position)})
    await ok("GET", everything, treat, params={"_at": datetime.now(UTC).isoformat()})
    await ok("GET", "/fhir/Consent", treat, params={"patient": pid})
    # A research read, under a project the regulator registers.
    now = datetime.now(UTC)
    project = {
        "code": code,
        "title": "读取计划研究",
        "ethics_approval": "伦审 2026-001",
        "institutions": ["thc-east"],
        "categories": ["diagnosis", "lab"],
        "starts": (now - timedelta(days=1)).isoformat(),
        "ends": (now + timedelta(days=30)).isoformat(),
    }
    reg = token(ex, "reg-plan", "county", "regulator")
    await ok("POST", "/research/projects", reg, json=project)
    await ok("GET", "/research/projects", treat)
    study = {**treat, "X-Purpose-Of-Use": "HRESCH", "X-Research-Project": code}
    await ok("GET", everything, study)

    # Emergency access by a physician with no care relationship.
    glass = {**token(ex, "dr-far", "vc-peach", "physician"), "X-Purpose-Of-Use": "ETREAT"}
    reason = {"reason_code": "unconscious", "reason": "brought in unconscious, no relative"}
    await ok("POST", f"/fhir/Patient/{pid}/$break-glass", glass, json=reason)
    await ok("GET", everything, glass)

    patient = token(ex, pid, "patient", "patient")
    await ok("GET", everything, patient)
    await ok("GET", "/fhir/Consent", patient, params={"patient": pid})
    consent = {"scope": ["county"], "purposes": ["TREAT"], "notice": "县医共体信息共享告知书 v1"}
    await ok("POST", "/fhir/Consent", patient, json=consent)
    await ok("GET", "/fhir/AuditEvent", patient, params={"patient": pid})
    await ok("GET", "/portal/notices", patient)

    # Referrals, as the receiving physician.
    county = {**token(ex, "dr-cty", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    sent = await ok("GET", "/fhir/ServiceRequest", county, params={"patient": pid})
    rid = sent.json()["entry"][0]["resource"]["id"]
    await ok("GET", f"/fhir/ServiceRequest/{rid}", county)
    await ok("GET", "/fhir/Task", county, params={"focus": f"ServiceRequest/{rid}"})
    await ok("GET", "/referrals/inbox", county)
    await ok("GET", "/referrals/outbox", treat)
    await ok("GET", "/referrals/statistics", county)

    await _regulator(ex, ok, pid)


async def _regulator(ex: Running, ok: Any, pid: str) -> None:
    reg = token(ex, "reg-plan", "county", "regulator")
    pool = ex.rt.pool
    with uncaptured():
        read = await pool.fetchval(
            "SELECT max(seq) FROM audit_log WHERE action = 'read' AND decision = 'permit'"
        )
        glass = await pool.fetchval(
            "SELECT max(seq) FROM audit_log WHERE action = 'break-glass' AND decision = 'permit'"
        )
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}
    await ok("GET", "/fhir/AuditEvent", reg, params={"patient": pid})
    await ok("GET", "/audit/export.csv", reg, params={"patient": pid})
    await ok("GET", "/audit/breach-scope", reg, params={"agent": "dr-plan", **window})
    await ok("GET", "/audit/break-glass-review", reg)
    review = {"outcome": "justified", "comment": "unconscious on arrival"}
    await ok("POST", f"/audit/break-glass-review/{glass}", reg, json=review)
    await ok("GET", "/audit/redecide", reg, params={"seq": str(read)})
    await ok("GET", "/audit/disclosed", reg, params={"seq": str(read)})
    await ok("GET", "/audit/alerts", reg)
    await ok("GET", "/audit/seals", reg)
    await ok("GET", "/audit/data-quality", reg, params={"days": "7"})
    steward = token(ex, "steward-plan", "county", "mpi_steward")
    await ok("GET", "/mpi/merge-requests", steward)
    await ok("GET", "/mpi/merge-requests", steward, params={"status": "approved"})
    # A proof reads stored nodes (audit.proof_nodes) only in a tree of 32 records or more:
    # each look at the head is itself a record, and a head is signed every 0.2 s here.
    waited = asyncio.get_running_loop().time() + 20
    while (size := int((await ok("GET", "/audit/head", reg)).json()["size"])) < 48:
        assert asyncio.get_running_loop().time() < waited, f"no head past {size} records"
        await asyncio.sleep(0.1)
    await ok("GET", "/audit/proof/inclusion", reg, params={"seq": "0", "size": str(size)})
    await ok("GET", "/audit/proof/consistency", reg, params={"first": "1", "second": str(size)})
