"""The regional patient index and corrections, through NATS, the ledger and the projection.

A newborn arrives without a resident ID and is linked later; two registrations of one person
are merged (ADT^A40) and unmerged; a result is amended and a diagnosis retracted; the record
as it stood before each change stays readable with ``_at=``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from projections.postgres import PatientRecordReader
from tests.factories import (
    condition_item,
    consent_item,
    encounter_item,
    observation_item,
    resident,
)
from tests.integration.conftest import Running
from tests.integration.test_submissions import envelope, send
from tests.integration.test_walking_skeleton import token


def by_mrn(mrn: str, **more: str) -> dict[str, str]:
    return {"mrn": mrn, **more}


def obs(patient: dict[str, str], source_id: str, value: str, **item: Any) -> dict[str, Any]:
    out = observation_item("x", source_id, value)
    out["payload"]["patient"] = patient
    return {**out, **item}


def newborn(patient: dict[str, str], source_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "patient",
        "payload": {
            "patient": patient,
            "name": "王小宝",
            "gender": "male",
            "birth_date": "2026-10-30",
        },
    }


async def submit(running: Running, institution: str, items: list[dict[str, Any]]) -> dict:
    (receipt,) = await send(running, institution, [envelope(running, institution, items)])
    await running.settle()
    return receipt


def codes(receipt: dict) -> list[str]:
    return [p["code"] for p in receipt.get("problems", [])]


async def values(reader: PatientRecordReader, pid: Any, at: int | None = None) -> list[str]:
    """The observation values in a patient's record (now, or as it stood at ``at``)."""
    rows = await reader.entries(pid, await reader.members(pid, at), at)
    return sorted(
        str(json.loads(r["resource"])["valueQuantity"]["value"])
        for r in rows
        if r["kind"] == "observation"
    )


async def test_newborn_linked_later_then_amended_and_retracted(exchange: Running) -> None:
    await exchange.register("county", "county_hospital", "县医院")
    await exchange.register("thc", "township_health_centre", "东城镇卫生院")
    reader = exchange.rt.records
    rid = resident(41)

    # A newborn is registered at the county hospital with its MRN only: a temporary identity.
    first = await submit(
        exchange,
        "county",
        [newborn(by_mrn("NB-001"), "pat-nb"), obs(by_mrn("NB-001"), "obs-1", "37")],
    )
    assert first["status"] == "accepted"
    temp = await reader.find_patient(mrn_system("county"), "NB-001")
    assert temp is not None and (await reader.patient(temp))["temporary"] is True
    assert await reader.find_patient(RESIDENT_ID_SYSTEM, rid) is None
    before_link = await exchange.rt.sync(exchange.rt.ledger.max_position)

    # The parents bring the birth registration: the same MRN now comes with a resident ID.
    await submit(exchange, "county", [newborn(by_mrn("NB-001", resident_id=rid), "pat-nb-2")])
    person = await reader.find_patient(RESIDENT_ID_SYSTEM, rid)
    assert person is not None and person != temp
    assert await reader.find_patient(mrn_system("county"), "NB-001") == person
    assert await values(reader, person) == ["37"]  # the newborn's entry followed the link
    assert await reader.root(temp) == person
    assert await reader.root(temp, before_link) == temp  # …and was its own before

    # The township names the same child by resident ID and its own MRN.
    await submit(exchange, "thc", [obs(by_mrn("T-77", resident_id=rid), "obs-t", "38")])
    assert await values(reader, person) == ["37", "38"]
    assert await reader.find_patient(mrn_system("thc"), "T-77") == person

    # The hospital amends its result; the record shows the new value, history both.
    before_amend = await exchange.rt.sync(exchange.rt.ledger.max_position)
    amended = await submit(
        exchange, "county", [obs(by_mrn("NB-001"), "obs-1-c", "36.5", amends="obs-1")]
    )
    assert amended["status"] == "accepted"
    assert await values(reader, person) == ["36.5", "38"]
    assert await values(reader, person, before_amend) == ["37", "38"]

    # A diagnosis entered in error is retracted: gone now, and gone from the record as it
    # stood before the retraction too (it may have been filed on the wrong patient); only
    # the entry's history, for auditors, keeps it.
    dx = condition_item(rid, "dx-1")
    await submit(exchange, "county", [dx])
    before_retract = await exchange.rt.sync(exchange.rt.ledger.max_position)
    retracted = await submit(
        exchange,
        "county",
        [
            {
                "source_id": "dx-1-x",
                "kind": "retract",
                "payload": {
                    "patient": {"resident_id": rid},
                    "record": "dx-1",
                    "reason": "录入错误：患者非本人",
                },
            }
        ],
    )
    assert retracted["status"] == "accepted"
    kinds_now = [r["kind"] for r in await reader.entries(person, [person, temp])]
    kinds_then = [r["kind"] for r in await reader.entries(person, [person, temp], before_retract)]
    assert "condition" not in kinds_now and "condition" not in kinds_then
    versions = await reader.history("county", "dx-1")
    assert [v["ended_by"] for v in versions] == ["retracted"]
    # An amendment superseded before a retraction is as much in error as the last version.
    await submit(exchange, "county", [condition_item(rid, "dx-2")])
    await submit(exchange, "county", [{**condition_item(rid, "dx-2b", "E11"), "amends": "dx-2"}])
    before_second = await exchange.rt.sync(exchange.rt.ledger.max_position)
    await submit(
        exchange,
        "county",
        [
            {
                "source_id": "dx-2-x",
                "kind": "retract",
                "payload": {
                    "patient": {"resident_id": rid},
                    "record": "dx-2",
                    "reason": "录入错误",
                },
            }
        ],
    )
    kinds_then = [r["kind"] for r in await reader.entries(person, [person, temp], before_second)]
    assert "condition" not in kinds_then

    # Corrections must point at a record the institution sent; identifiers must not collide.
    unknown = await submit(
        exchange, "county", [obs(by_mrn("NB-001"), "obs-9", "1", amends="never-sent")]
    )
    assert unknown["status"] == "rejected" and codes(unknown) == ["correction.unknown_record"]
    other = resident(42)
    clash = await submit(exchange, "thc", [obs(by_mrn("T-77", resident_id=other), "obs-c", "2")])
    assert clash["status"] == "rejected" and codes(clash) == ["identity.conflict"]
    assert await reader.find_patient(RESIDENT_ID_SYSTEM, other) is None  # nothing half-done

    # Over HTTP: the record as it stood before the amendment, by ledger position and instant
    # (the county sees the patient for a visit: its care relationship).
    await submit(exchange, "county", [consent_item(rid, "consent-1"), encounter_item(rid, "v-1")])
    headers = {**token(exchange, "doctor-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        now = await http.get(f"/fhir/Patient/{person}/$everything", headers=headers)
        then = await http.get(
            f"/fhir/Patient/{person}/$everything",
            params={"_at": str(before_amend)},
            headers=headers,
        )
        instant = await http.get(
            f"/fhir/Patient/{temp}/$everything",
            params={"_at": datetime.now(UTC).isoformat()},
            headers=headers,
        )
        bad = await http.get(
            f"/fhir/Patient/{person}/$everything", params={"_at": "yesterday"}, headers=headers
        )

    def observed(response: httpx.Response) -> list[Any]:
        return sorted(
            e["resource"]["valueQuantity"]["value"]
            for e in response.json()["entry"]
            if e["resource"]["resourceType"] == "Observation"
        )

    assert now.status_code == then.status_code == instant.status_code == 200
    assert observed(now) == [36.5, 38] and observed(then) == [37, 38]
    # Asking by the temporary id reads the surviving patient, every subject rewritten to it.
    assert instant.json()["entry"][0]["resource"]["id"] == str(person)
    subjects = {
        e["resource"].get("subject", {}).get("reference")
        for e in instant.json()["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }
    assert subjects == {f"Patient/{person}"}
    assert bad.status_code == 400


async def test_merge_and_unmerge_lose_and_double_nothing(exchange: Running) -> None:
    await exchange.register("county", "county_hospital", "县医院")
    reader = exchange.rt.records

    # One person registered twice at the hospital (two MRNs, no resident ID yet).
    await submit(
        exchange,
        "county",
        [
            newborn(by_mrn("A-1"), "pa"),
            obs(by_mrn("A-1"), "oa", "1"),
            obs(by_mrn("A-1"), "oa2", "2"),
        ],
    )
    await submit(exchange, "county", [newborn(by_mrn("B-1"), "pb"), obs(by_mrn("B-1"), "ob", "3")])
    a = await reader.find_patient(mrn_system("county"), "A-1")
    b = await reader.find_patient(mrn_system("county"), "B-1")
    assert a and b and a != b
    separate = (await values(reader, a), await values(reader, b))
    assert separate == (["1", "2"], ["3"])

    # ADT^A40: B-1 was A-1. One record, every entry once; B's MRN finds A.
    merge = {
        "source_id": "a40-1",
        "kind": "merge",
        "payload": {"patient": by_mrn("A-1"), "merged": by_mrn("B-1")},
    }
    assert (await submit(exchange, "county", [merge]))["status"] == "accepted"
    assert await values(reader, a) == ["1", "2", "3"]
    assert await reader.find_patient(mrn_system("county"), "B-1") == a
    # Entries sent for B-1 after the merge belong to the survivor too.
    await submit(exchange, "county", [obs(by_mrn("B-1"), "ob2", "4")])
    assert await values(reader, a) == ["1", "2", "3", "4"]

    # Merging someone the index never saw is refused, and says which side is unknown.
    ghost = {
        "source_id": "a40-2",
        "kind": "merge",
        "payload": {"patient": by_mrn("A-1"), "merged": by_mrn("Z-9")},
    }
    refused = await submit(exchange, "county", [ghost])
    assert codes(refused) == ["patient.unknown"]
    assert refused["problems"][0]["field"] == "payload.merged"

    # The merge was a mistake: unmerge gives each back exactly what it had.
    unmerge = {
        "source_id": "a37-1",
        "kind": "unmerge",
        "payload": {"patient": by_mrn("A-1"), "unmerged": by_mrn("B-1")},
    }
    assert (await submit(exchange, "county", [unmerge]))["status"] == "accepted"
    assert (await values(reader, a), await values(reader, b)) == (["1", "2"], ["3", "4"])
    assert await reader.find_patient(mrn_system("county"), "B-1") == b
    again = await submit(exchange, "county", [{**unmerge, "source_id": "a37-2"}])
    assert codes(again) == ["unmerge.not_merged"]


async def test_as_of_reads_never_show_what_was_retracted_as_entered_in_error(
    exchange: Running,
) -> None:
    """A diagnosis filed on the wrong patient is retracted. Read as the record stood before
    the retraction, by a physician and by the patient, it is not there; the rest is."""
    await exchange.register("county", "county_hospital", "县医院")
    rid = resident(43)
    await submit(exchange, "county", [condition_item(rid, "wrong-dx", "C34.9")])
    await submit(exchange, "county", [observation_item(rid, "bp-ok", "120")])
    before = await exchange.rt.sync(exchange.rt.ledger.max_position)
    retract = {
        "source_id": "wrong-dx-x",
        "kind": "retract",
        "payload": {"patient": {"resident_id": rid}, "record": "wrong-dx", "reason": "非本人"},
    }
    assert (await submit(exchange, "county", [retract]))["status"] == "accepted"
    await submit(exchange, "county", [consent_item(rid, "consent-w"), encounter_item(rid, "v-w")])
    await exchange.settle()
    person = await exchange.rt.records.find_patient(RESIDENT_ID_SYSTEM, rid)
    readers = [
        {**token(exchange, "doctor-li", "county", "physician"), "X-Purpose-Of-Use": "TREAT"},
        token(exchange, str(person), "patient", "patient"),
    ]
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        for headers in readers:
            then = await http.get(
                f"/fhir/Patient/{person}/$everything", params={"_at": str(before)}, headers=headers
            )
            assert then.status_code == 200
            types = [e["resource"]["resourceType"] for e in then.json()["entry"]]
            assert "Observation" in types and "Condition" not in types
