"""Every route of the app, every role: only the roles a route names get anything, nothing
clinical leaves without a permit, and every request — refused ones too — is in the audit log
before its answer. The routes are the app's own declarations; the roles each serves are
written out here again, so a route added without a line here, or declared with other roles,
fails the first test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from exchange.api.access import ApiRoute
from exchange.api.app import api_routes
from exchange.pages.app import create_app, page_routes
from tests.factories import record_items, resident
from tests.integration.conftest import Running
from tests.integration.referral_steps import accepted, consortium, referral
from tests.integration.test_walking_skeleton import token

ROLES = ("physician", "nurse", "patient", "regulator", "admin", "mpi_steward")
# (method, path) -> (the roles it serves, whether it can return clinical data)
GATES: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = {
    ("GET", "/fhir/metadata"): (("anyone",), False),
    ("GET", "/fhir/Patient"): (("physician",), False),  # the id only: lookup
    ("POST", "/fhir/Patient/_search"): (("physician",), False),  # the same, by form
    ("GET", "/fhir/Patient/{pid}/$everything"): (("physician", "nurse", "patient"), True),
    ("POST", "/fhir/Patient/{pid}/$break-glass"): (("physician",), False),
    ("GET", "/fhir/Consent"): (("physician", "nurse", "patient"), True),
    ("POST", "/fhir/Consent"): (("patient",), False),
    ("GET", "/fhir/AuditEvent"): (("regulator", "patient"), False),
    ("GET", "/audit/export.csv"): (("regulator",), False),
    ("GET", "/audit/breach-scope"): (("regulator",), False),
    ("GET", "/audit/break-glass-review"): (("regulator",), False),
    ("POST", "/audit/break-glass-review/{seq:int}"): (("regulator",), False),
    ("GET", "/audit/redecide"): (("regulator",), False),
    ("GET", "/audit/alerts"): (("regulator",), False),
    ("GET", "/audit/disclosed"): (("regulator",), False),
    ("GET", "/audit/head"): (("regulator",), False),
    ("GET", "/audit/proof/inclusion"): (("regulator",), False),
    ("GET", "/audit/proof/consistency"): (("regulator",), False),
    ("GET", "/audit/data-quality"): (("regulator", "admin"), False),
    ("GET", "/fhir/ServiceRequest"): (("physician",), True),
    ("GET", "/fhir/ServiceRequest/{rid}"): (("physician",), True),
    ("GET", "/fhir/Task"): (("physician",), True),
    ("GET", "/referrals/inbox"): (("physician",), False),
    ("GET", "/referrals/outbox"): (("physician",), False),
    ("GET", "/referrals/statistics"): (("physician", "regulator", "admin"), False),
    ("GET", "/audit/seals"): (("regulator",), False),
    ("POST", "/audit/seals/{pid}/lift"): (("regulator",), False),
    ("GET", "/portal/notices"): (("patient",), False),
    ("GET", "/research/projects"): (("regulator", "physician"), False),
    ("POST", "/research/projects"): (("regulator",), False),
    ("GET", "/mpi/merge-requests"): (("mpi_steward",), False),
    ("POST", "/mpi/merge-requests/{rid}"): (("mpi_steward",), False),
    ("GET", "/healthz"): (("anyone",), False),
    ("GET", "/readyz"): (("anyone",), False),
    ("GET", "/metrics"): (("admin",), False),
    # The pages (exchange/pages): each with the access of the API route it answers from.
    ("GET", "/app/"): (("nurse", "patient", "physician", "regulator"), False),
    ("POST", "/app/search"): (("physician",), False),
    ("GET", "/app/patients/{pid}"): (("physician", "nurse", "patient"), True),
    ("GET", "/app/patients/{pid}/consents"): (("patient",), True),
    ("POST", "/app/patients/{pid}/consents"): (("patient",), False),
    ("GET", "/app/patients/{pid}/reads"): (("patient",), False),
    ("GET", "/app/patients/{pid}/trend"): (("physician", "nurse", "patient"), True),
    ("GET", "/app/patients/{pid}/break-glass"): (("physician",), False),
    ("POST", "/app/patients/{pid}/break-glass"): (("physician",), False),
    ("GET", "/app/referrals/inbox"): (("physician",), False),
    ("GET", "/app/referrals/outbox"): (("physician",), False),
    ("GET", "/app/patients/{pid}/as-it-stood"): (("nurse", "patient", "physician"), False),
    ("GET", "/app/audit/"): (("regulator",), False),
    ("GET", "/app/audit/check"): (("regulator",), False),
    ("GET", "/app/audit/events"): (("regulator",), False),
    ("GET", "/app/audit/export.csv"): (("regulator",), False),
    ("GET", "/app/audit/breach-scope"): (("regulator",), False),
    ("GET", "/app/audit/alerts"): (("regulator",), False),
    ("GET", "/app/audit/break-glass"): (("regulator",), False),
    ("POST", "/app/audit/break-glass/{seq:int}"): (("regulator",), False),
    ("GET", "/app/audit/referrals"): (("regulator",), False),
    ("GET", "/app/audit/data-quality"): (("regulator",), False),
    ("GET", "/app/referrals/{rid}"): (("physician",), True),
}
# The pages' sign-in routes: they take a token (and the HIS launch goes through the gate as
# ``page.launch``, the lookup's access), so no role is listed for them here.
SIGN_IN = {
    ("GET", "/app/login"),
    ("POST", "/app/login"),
    ("POST", "/app/logout"),
    ("POST", "/app/launch"),
}
# What would show clinical data of the test patient in an answer.
MARKERS = (
    "Observation",
    "Condition",
    "Encounter",
    '"resourceType":"Consent"',
    "李建国",
    "原发性高血压",
    "血压控制不佳",
)


# Built without a running exchange: the declarations are all that is looked at.
NO_EXCHANGE: Any = SimpleNamespace(
    records=None, referrals=None, page_key=b"k" * 32, consent_notice=None
)


def declared() -> dict[tuple[str, str], ApiRoute]:
    return {(r.method, r.path): r for r in [*api_routes(NO_EXCHANGE), *page_routes(NO_EXCHANGE)]}


def served(route: ApiRoute) -> tuple[str, ...]:
    return ("anyone",) if route.access.public else tuple(sorted(route.access.roles))


def test_every_declared_route_is_listed_with_the_roles_it_serves() -> None:
    routes = declared()
    assert set(routes) == set(GATES)
    for key, route in routes.items():
        assert served(route) == tuple(sorted(GATES[key][0])), key
        # Anyone means anyone: only a public route goes unauthenticated.
        assert route.access.public == (GATES[key][0] == ("anyone",)), key
    # The app serves exactly what is declared, each path with its method.
    app = create_app(NO_EXCHANGE)
    found: set[tuple[str, str]] = set()
    for served_route in app.routes:
        if isinstance(served_route, Mount):  # the pages' static files
            assert served_route.path == "/app/static"
            continue
        assert isinstance(served_route, Route)
        found |= {(m, served_route.path) for m in served_route.methods or () if m != "HEAD"}
    assert found == set(routes) | SIGN_IN


def url_for(path: str, ids: dict[str, str]) -> str:
    return path.replace("{pid}", ids["pid"]).replace("{rid}", ids["rid"]).replace("{seq:int}", "1")


async def audited(running: Running, request_id: str) -> bool:
    return bool(
        await running.rt.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
            request_id,
        )
    )


@pytest.mark.parametrize("role", [*ROLES, None], ids=[*ROLES, "no-token"])
async def test_only_the_roles_a_route_serves_get_through_and_every_request_is_audited(
    exchange: Running, role: str | None
) -> None:
    await consortium(exchange)
    rid = resident(71)
    await accepted(
        exchange, "thc-east", [*record_items(rid, "thc-71", consent=True), referral(rid, "REF-G")]
    )
    await exchange.settle()
    pid = str(await exchange.rt.pool.fetchval("SELECT patient_id FROM referrals"))
    ids = {
        "pid": pid,
        "rid": str(await exchange.rt.pool.fetchval("SELECT referral_id FROM referrals")),
    }
    # An outsider in each role: a person of another institution (or another patient).
    headers = {"X-Purpose-Of-Use": "TREAT"}
    if role is not None:
        person = "00000000-0000-4000-8000-000000000000" if role == "patient" else "outsider"
        headers |= token(exchange, person, "vc-peach", role)
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        for method, path in declared():
            roles, clinical = GATES[(method, path)]
            url = url_for(path, ids)
            answer = await http.request(
                method,
                url,
                headers=headers,
                json={} if method == "POST" else None,
                params={"patient": pid},
            )
            where = f"{method} {path} as {role}"
            if "anyone" in roles:
                assert answer.status_code == 200, where
                continue
            # Whatever the answer, the request is in the audit log (refusals included).
            assert await audited(exchange, answer.headers["x-request-id"]), where
            if role is None:  # a page sends the caller to sign in
                assert answer.status_code == (303 if path.startswith("/app/") else 401), where
            elif role not in roles:
                assert answer.status_code in (403, 404), where
            if answer.status_code != 200 or clinical:
                # An outsider gets nothing of the patient's record, whatever the route.
                assert not any(m in answer.text for m in MARKERS), where


async def test_a_revoked_token_is_refused_at_once_and_the_refusal_audited(
    exchange: Running,
) -> None:
    headers = token(exchange, "dr-gone", "county", "physician")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        assert (
            await http.get("/referrals/inbox", headers={**headers, "X-Purpose-Of-Use": "TREAT"})
        ).status_code == 200
        # The person is cut off (as `hie token revoke --person` does).
        assert exchange.rt.revocations is not None
        await exchange.rt.revocations.revoke_person("dr-gone", before=datetime.now(UTC))
        for _ in range(50):
            refused = await http.get(
                "/referrals/inbox", headers={**headers, "X-Purpose-Of-Use": "TREAT"}
            )
            if refused.status_code == 401:
                break
            await asyncio.sleep(0.1)
        assert refused.status_code == 401
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "token.revoked"
        assert await audited(exchange, refused.headers["x-request-id"])
