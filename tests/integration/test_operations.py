"""What an operator's machines see: /metrics counts submissions and reads with bounded
labels and no identifier, for an admin's token only; /healthz answers; /readyz says ready
when the read models are caught up and the servers answer, and names what is not when
they are not."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from adapters.envelope import new_private_key
from domain.identity import RESIDENT_ID_SYSTEM
from exchange.api.app import create_app
from exchange.settings import Settings
from exchange.telemetry.probes import Probes
from tests.factories import observation_item, record_items, resident
from tests.integration.conftest import Running, running
from tests.integration.referral_steps import accepted, consortium, refused
from tests.integration.test_every_route_gated import audited
from tests.integration.test_walking_skeleton import submit, token

LABELS = {"institution", "outcome", "kind", "code", "action", "purpose", "projection"}
LABELS |= {"dependency", "le"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(running: Running, http: httpx.AsyncClient) -> tuple[str, Samples]:
    admin = token(running, "ops-1", "exchange", "admin")
    answer = await http.get("/metrics", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.text, samples(answer.text)


async def test_metrics_count_what_happened_by_bounded_labels_and_only_for_an_admin(
    exchange: Running,
) -> None:
    # A consortium; a township centre sends two visits (one with a consent), the county
    # hospital one of its own ...
    await consortium(exchange)
    consented, other = resident(61), resident(62)
    await accepted(exchange, "thc-east", record_items(consented, "m-1", consent=True))
    await accepted(exchange, "thc-east", record_items(other, "m-2"))
    await accepted(exchange, "county", record_items(consented, "m-3"))
    # ... and one with an item of a kind nobody knows (refused), and someone unregistered
    # signs a submission with a key of its own (refused, unauthenticated).
    await refused(exchange, "thc-east", [{"source_id": "x-1", "kind": "bogus", "payload": {}}])
    exchange.keys["intruder"] = new_private_key(exchange.rt.settings.profile)
    stranger = await submit(exchange, "intruder", [observation_item(other, "i-1")])
    assert stranger["problems"][0]["code"] == "institution.unknown"
    await exchange.settle()

    doctor = token(exchange, "doctor-li", "county", "physician")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # A physician finds both; reads the consented record (permitted), the other one
        # (refused), breaks the glass for it and reads it in the emergency (permitted); and
        # sends a purpose of use nobody knows (refused).
        ids = []
        for rid in (consented, other):
            found = await http.post(
                "/fhir/Patient/_search",
                headers={**doctor, "X-Purpose-Of-Use": "ETREAT"},
                data={"identifier": f"{RESIDENT_ID_SYSTEM}|{rid}"},
            )
            ids.append(found.json()["entry"][0]["resource"]["id"])
        treat = {**doctor, "X-Purpose-Of-Use": "TREAT"}
        read = f"/fhir/Patient/{ids[0]}/$everything"
        assert (await http.get(read, headers=treat)).status_code == 200
        other_read = f"/fhir/Patient/{ids[1]}/$everything"
        assert (await http.get(other_read, headers=treat)).status_code == 403
        grant = await http.post(
            f"/fhir/Patient/{ids[1]}/$break-glass",
            headers=doctor,
            json={"reason_code": "unconscious", "reason": "送医时昏迷，需查看既往病史"},
        )
        assert grant.status_code == 200, grant.text
        etreat = {**doctor, "X-Purpose-Of-Use": "ETREAT"}
        assert (await http.get(other_read, headers=etreat)).status_code == 200
        odd = {**doctor, "X-Purpose-Of-Use": "SECRET-PURPOSE-7"}
        assert (await http.get(read, headers=odd)).status_code in (400, 403)

        # /metrics: nobody without a token, not a physician; an admin, audited each time.
        assert (await http.get("/metrics")).status_code == 401
        physician_scrape = await http.get("/metrics", headers=doctor)
        assert physician_scrape.status_code == 403
        assert await audited(exchange, physician_scrape.headers["x-request-id"])
        text, found = await scrape(exchange, http)

    # Submissions by institution and outcome; items by kind; problems by code.
    assert value(found, "hie_submissions_total", institution="thc-east", outcome="accepted") == 2
    assert value(found, "hie_submissions_total", institution="thc-east", outcome="rejected") == 1
    assert value(found, "hie_submissions_total", institution="unauthenticated", outcome="rejected")
    assert value(found, "hie_submissions_total", institution="county", outcome="accepted") == 1
    assert value(found, "hie_submission_items_total", kind="observation") == 3
    assert value(found, "hie_submission_items_total", kind="consent") == 1
    assert value(found, "hie_submission_problems_total", code="institution.unknown") == 1
    assert value(found, "hie_submission_queue_seconds_count") == 5
    assert value(found, "hie_ledger_append_duration_seconds_count") >= 3
    assert value(found, "hie_gateway_batch_duration_seconds_count") >= 5
    # The projection: each accepted submission timed from the gateway to the read models,
    # and the institution's latest submission.
    assert value(found, "hie_projection_lag_seconds_count") == 3
    last = value(found, "hie_institution_last_submission_timestamp_seconds", institution="thc-east")
    assert time.time() - 120 < last <= time.time()
    # Reads by action, outcome and purpose (an unknown purpose is "other"); break-glass.
    assert value(
        found, "hie_read_decisions_total", action="read", outcome="permit", purpose="TREAT"
    )
    assert value(found, "hie_read_decisions_total", action="read", outcome="deny", purpose="TREAT")
    assert value(
        found, "hie_read_decisions_total", action="read", outcome="permit", purpose="ETREAT"
    )
    assert any(
        name == "hie_read_decisions_total" and ("purpose", "other") in labels
        for name, labels in found
    )
    assert value(found, "hie_break_glass_total", action="break-glass") == 1  # the grant
    assert value(found, "hie_break_glass_total", action="read") == 1  # the read under it
    assert value(found, "hie_http_request_duration_seconds_count", action="read") == 4
    # Shared state at the scrape: the ledger's head, the read models caught up, the consumer
    # empty, the audit tree, the revocation list fresh, both servers up.
    ledger = await exchange.rt.sync(exchange.rt.ledger.max_position)
    assert value(found, "hie_ledger_position") == ledger > 0
    assert value(found, "hie_projection_behind_events", projection="patient_record") == 0
    assert value(found, "hie_gateway_consumer_pending_messages") == 0
    assert value(found, "hie_audit_tree_size") > 10
    assert 0 <= value(found, "hie_revocation_list_age_seconds") < 10
    assert value(found, "hie_dependency_up", dependency="postgresql") == 1
    assert value(found, "hie_dependency_up", dependency="nats") == 1
    # No label outside the bounded few, and nothing that names a patient or a person.
    assert {k for _, labels in found for k, _ in labels} <= LABELS
    for secret in (consented, other, *ids, "doctor-li", "SECRET-PURPOSE-7", "李建国", "intruder"):
        assert secret not in text


@contextlib.asynccontextmanager
async def row_locked(running: Running) -> AsyncIterator[None]:
    """Hold the read models' position row: the projection cannot commit until released."""
    async with running.owner() as conn, conn.transaction():
        await conn.execute(
            "SELECT position FROM projection_position WHERE name = 'patient_record' FOR UPDATE"
        )
        yield


async def ready(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/readyz")


async def test_readyz_says_ready_only_while_the_read_models_keep_up(settings: Settings) -> None:
    # An exchange whose read models may be at most 2 ledger events behind.
    async with running(replace(settings, ready_max_behind=2)) as exchange:
        await consortium(exchange)
        await exchange.settle()
        async with httpx.AsyncClient(base_url=exchange.url) as http:
            assert (await http.get("/healthz")).json() == {"status": "alive"}
            assert (await ready(http)).json() == {"status": "ready"}
            # The projection is held up while five submissions are accepted.
            async with row_locked(exchange):
                for n in range(5):
                    await accepted(exchange, "thc-east", record_items(resident(80 + n), f"r{n}"))
                late = await ready(http)
                assert late.status_code == 503
                [issue] = late.json()["issue"]
                assert issue["details"]["text"].startswith("projection patient_record: ")
                assert "ledger events behind" in issue["details"]["text"]
                assert (await http.get("/healthz")).status_code == 200  # alive all the same
            # Released, it catches up and the exchange is ready again.
            await exchange.settle()
            assert (await ready(http)).status_code == 200


async def test_readyz_names_the_servers_that_do_not_answer(exchange: Running) -> None:
    # Probes of a PostgreSQL where nothing listens and of a NATS connection that is closed.
    with socket_free() as port:
        nowhere = await asyncpg.create_pool(f"postgresql://hie@127.0.0.1:{port}/x", min_size=0)
    closed = await nats.connect(exchange.rt.endpoints.nats_url)
    await closed.close()
    rt = exchange.rt
    broken = Probes(
        pool=nowhere,
        ledger_position=lambda: rt.sync(rt.ledger.max_position),
        nc=closed,
        consortium=rt.settings.consortium,
        audit=rt.audit_writer.store,
        revocations=rt.revocations,
        max_behind=10,
    )
    app = create_app(replace(rt.api_context(), probes=broken))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://exchange"
    ) as http:
        answer = await ready(http)
    await nowhere.close()
    assert answer.status_code == 503
    said = sorted(i["details"]["text"] for i in answer.json()["issue"])
    assert said == ["nats: does not answer", "postgresql: does not answer"]


@contextlib.contextmanager
def socket_free() -> Any:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port
