"""The steps consent scenarios on the real servers share: a treatment relationship, an HIV test
and a depression diagnosis to read, a read's matches and refusal code, and the decision and
disclosure as the audit rebuilds them. Synthetic data only; not collected as tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from consent.facts import ResearchProject
from consent.research import ResearchProjects
from domain.categories import CATEGORIES
from tests.factories import observation_item
from tests.integration.conftest import Running
from tests.integration.test_walking_skeleton import token


def treat(
    running: Running,
    person: str = "dr-li",
    institution: str = "county",
    purpose: str = "TREAT",
    role: str = "physician",
) -> dict[str, str]:
    return {**token(running, person, institution, role), "X-Purpose-Of-Use": purpose}


def match(response: httpx.Response) -> list[dict[str, Any]]:
    return [e["resource"] for e in response.json()["entry"] if e["search"]["mode"] == "match"]


def code(response: httpx.Response) -> str:
    return response.json()["issue"][0]["details"]["coding"][0]["code"]  # type: ignore[no-any-return]


async def patient_of(running: Running, rid: str) -> str:
    return str(running.rt.ledger.patient_id(rid))


def hiv_test(rid: str, source_id: str) -> dict[str, Any]:
    item = observation_item(rid, source_id)
    item["payload"] |= {
        "code": {"system": "http://loinc.org", "code": "7917-8", "display": "HIV 1+2 抗体"},
        "category": "laboratory",
        "value_quantity": None,
        "value_string": "阴性",
    }
    return item


def depression(rid: str, source_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "condition",
        "payload": {
            "patient": {"resident_id": rid},
            "code": {
                "system": "http://hl7.org/fhir/sid/icd-10",
                "code": "F32.9",
                "display": "抑郁发作",
            },
        },
    }


async def redecided(running: Running, http: httpx.AsyncClient, request_id: str) -> dict:
    seq = await running.rt.pool.fetchval(
        "SELECT seq FROM audit_log WHERE record_text::jsonb->>'request_id' = $1", request_id
    )
    regulator = token(running, "reg-1", "bureau", "regulator")
    answer = await http.get("/audit/redecide", params={"seq": seq}, headers=regulator)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def disclosed(running: Running, http: httpx.AsyncClient, answer: httpx.Response) -> dict:
    """What /audit/disclosed says of the read that gave ``answer``."""
    seq = await running.rt.pool.fetchval(
        "SELECT seq FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
        answer.headers["x-request-id"],
    )
    regulator = token(running, "reg-1", "bureau", "regulator")
    rebuilt = await http.get("/audit/disclosed", params={"seq": seq}, headers=regulator)
    assert rebuilt.status_code == 200, rebuilt.text
    return rebuilt.json()  # type: ignore[no-any-return]


async def study(running: Running, *institutions: str, code: str = "STUDY-1") -> dict[str, str]:
    """A research project the regulator registered, that these institutions read for; the
    header a research read names it with."""
    now = datetime.now(UTC)
    await ResearchProjects(running.rt.pool).register(
        ResearchProject(
            code,
            "县域慢病研究",
            "伦审 2026-001",
            institutions,
            CATEGORIES,
            now - timedelta(days=1),
            now + timedelta(days=30),
        ),
        registered_by="reg-1",
        at=now,
    )
    return {"X-Research-Project": code}
