"""Issue: any institution could merge two residents, after which one person's patient token
read the other's whole record. Now a member's merge of two different people is only a
request; the identity steward decides it over HTTP, audited; a member's own temporary
identity still merges at once."""

from __future__ import annotations

import json
from uuid import UUID

import httpx

from domain.identity import mrn_system
from tests.factories import observation_item, patient_item, record_items, resident
from tests.integration.conftest import Running
from tests.integration.consent_steps import depression, match, patient_of, treat
from tests.integration.identity_steps import decide, merge_item, request_id, steward
from tests.integration.referral_steps import accepted, consortium, notes, refused
from tests.integration.test_walking_skeleton import token


async def audit_of(running: Running, answer: httpx.Response) -> dict:
    text = await running.rt.pool.fetchval(
        "SELECT record_text FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
        answer.headers["x-request-id"],
    )
    return json.loads(text)  # type: ignore[no-any-return]


async def test_a_members_merge_of_two_residents_waits_for_the_steward(exchange: Running) -> None:
    await consortium(exchange)
    a, b = resident(301), resident(302)
    await accepted(exchange, "county", [*record_items(a, "sw-a"), depression(a, "sw-a-dx2")])
    await accepted(exchange, "thc-east", [patient_item(b, "sw-b", name="王秀英")])
    pid_a, pid_b = await patient_of(exchange, a), await patient_of(exchange, b)
    # The attack: the township clinic says B is A (an ADT^A40 naming two resident IDs).
    await accepted(exchange, "thc-east", [merge_item("a40-1", a, b)])
    await exchange.settle()
    b_token = token(exchange, pid_b, "patient", "patient")
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        # Nothing moved: B's token still reads only B's own record, and not A's.
        own = await http.get(f"/fhir/Patient/{pid_b}/$everything", headers=b_token)
        assert own.status_code == 200
        assert not any(r["resourceType"] == "Condition" for r in match(own))
        other = await http.get(f"/fhir/Patient/{pid_a}/$everything", headers=b_token)
        assert other.status_code == 403
        # The steward's queue holds the request, with what both institutions registered.
        queue = await http.get("/mpi/merge-requests", headers=steward(exchange))
        assert queue.status_code == 200
        [request] = queue.json()["requests"]
        assert request["reference"] == "thc-east/a40-1"
        assert request["requested_by"]["code"] == "thc-east"
        assert (request["survivor"]["patient_id"], request["merged"]["patient_id"]) == (
            pid_a,
            pid_b,
        )
        assert {i["value"] for i in request["merged"]["identifiers"]} >= {b}
        # The queue read is audited, naming both patients it showed.
        assert set((await audit_of(exchange, queue))["patients"]) == {pid_a, pid_b}
        # Nobody but a steward reads it or decides.
        for role in ("physician", "regulator", "admin"):
            who = token(exchange, "someone", "county", role)
            assert (await http.get("/mpi/merge-requests", headers=who)).status_code == 403
    # The member cannot decide its own request either (nor any other member).
    problem = await refused(
        exchange,
        "county",
        [
            {
                "source_id": "self-approve",
                "kind": "merge",
                "payload": {
                    "patient": {"resident_id": a},
                    "request": "thc-east/a40-1",
                    "decision": "approve",
                    "steward": "dr-li",
                    "reason": "我们自己确认过是同一个人",
                },
            }
        ],
    )
    assert problem["code"] == "merge.steward_only"
    # The legitimate path: the steward checks and approves; now B is A's record.
    approved = await decide(exchange, "thc-east/a40-1")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    record = await audit_of(exchange, approved)
    assert set(record["patients"]) == {pid_a, pid_b} and record["person"] == "steward-zhao"
    await exchange.settle()
    row = await exchange.rt.pool.fetchrow(
        "SELECT status, steward, decided_by FROM merge_requests WHERE reference = $1",
        "thc-east/a40-1",
    )
    assert (row["status"], row["steward"]) == ("approved", "steward-zhao")
    assert await exchange.rt.pool.fetchval(
        "SELECT merged_into FROM patients WHERE patient_id = $1", UUID(pid_b)
    ) == UUID(pid_a)
    again = await decide(exchange, "thc-east/a40-1", "reject")
    assert again.status_code == 409  # decided once
    # Nor can a member split what the steward joined; the steward can, naming the request.
    split = await refused(
        exchange,
        "thc-east",
        [
            {
                "source_id": "a37-1",
                "kind": "unmerge",
                "payload": {"patient": {"resident_id": a}, "unmerged": {"resident_id": b}},
            }
        ],
    )
    assert split["code"] == "unmerge.not_yours"
    undone = await decide(exchange, "thc-east/a40-1", "undo", "复核发现出生日期不一致，撤销合并")
    assert undone.status_code == 200 and undone.json()["status"] == "undone"
    await exchange.settle()
    assert (
        await exchange.rt.pool.fetchval(
            "SELECT merged_into FROM patients WHERE patient_id = $1", UUID(pid_b)
        )
        is None
    )
    assert (await decide(exchange, "thc-east/a40-1", "undo")).status_code == 409
    # The institution that asked was told each step, by regional ids only.
    told = await notes(exchange, "thc-east", 3)
    assert [(n["type"], n["event"], n["status"]) for n in told] == [
        ("merge_request", "request", "pending"),
        ("merge_request", "approve", "approved"),
        ("merge_request", "undo", "undone"),
    ]
    assert {(n["survivor"], n["merged"]) for n in told} == {(pid_a, pid_b)}
    assert b not in json.dumps(told)


async def test_a_rejected_merge_leaves_two_people(exchange: Running) -> None:
    await consortium(exchange)
    a, b = resident(311), resident(312)
    await accepted(exchange, "county", [*record_items(a, "rj-a", consent=True)])
    await accepted(exchange, "county", [observation_item(b, "rj-b", value="201")])
    await accepted(exchange, "county", [merge_item("a40-2", a, b)])
    rejected = await decide(
        exchange, "county/a40-2", "reject", "出生日期与性别均不一致，不是同一人"
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        read = await http.get(
            f"/fhir/Patient/{await patient_of(exchange, a)}/$everything", headers=treat(exchange)
        )
        assert read.status_code == 200
        values = {r.get("valueQuantity", {}).get("value") for r in match(read)}
        assert 201 not in values  # B's reading never joined A's record
        # A decision needs a written reason.
        rid = await request_id(exchange, "county/a40-2")
        short = await http.post(
            f"/mpi/merge-requests/{rid}",
            headers=steward(exchange),
            json={"decision": "approve", "reason": "ok"},
        )
        assert short.status_code == 400
    pending = await exchange.rt.pool.fetchval(
        "SELECT count(*) FROM merge_requests WHERE status = 'pending'"
    )
    assert pending == 0


async def test_a_temporary_identity_merges_at_once_only_for_the_institution_that_made_it(
    exchange: Running,
) -> None:
    await consortium(exchange)
    a = resident(321)
    await accepted(exchange, "county", [patient_item(a, "tm-a")])
    newborn = {
        "source_id": "tm-nb",
        "kind": "patient",
        "payload": {"patient": {"mrn": "NB-0001"}, "name": "李宝宝", "gender": "female"},
    }
    await accepted(exchange, "county", [newborn])
    # Another member's claim about the county's temporary patient is only a request...
    card = {**newborn, "source_id": "tm-card"}
    card["payload"] = {**newborn["payload"], "patient": {"health_card": "HCNB2026001"}}
    await accepted(exchange, "thc-east", [card])
    await accepted(
        exchange,
        "county",
        [
            {
                "source_id": "tm-m1",
                "kind": "merge",
                "payload": {
                    "patient": {"resident_id": a},
                    "merged": {"health_card": "HCNB2026001"},
                },
            }
        ],
    )
    await exchange.settle()
    assert await request_id(exchange, "county/tm-m1")
    # ... while the county merging its own newborn into the resident is applied at once.
    await accepted(
        exchange,
        "county",
        [
            {
                "source_id": "tm-m2",
                "kind": "merge",
                "payload": {"patient": {"resident_id": a}, "merged": {"mrn": "NB-0001"}},
            }
        ],
    )
    await exchange.settle()
    # The newborn's MRN now finds the resident.
    found = await exchange.rt.records.find_patient(mrn_system("county"), "NB-0001")
    assert found == UUID(await patient_of(exchange, a))
