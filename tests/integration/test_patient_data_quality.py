"""Resident IDs that real systems send, through NATS, the ledger and the projection.

A Patient whose gender and birth date contradict its resident ID: the FHIR adapter warns and
sends it, the exchange accepts it, and the Patient a physician reads carries each
contradiction as a data-quality ``meta.tag`` until the institution sends demographics that
agree. An ID of an invented GB/T 2260 division: the gateway refuses it, naming the item, the
field and the rule; one the ledger took before that rule still replays.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import httpx

from adapters.envelope import build_envelope
from adapters.fhir import read_fhir
from domain.identity import RESIDENT_ID_SYSTEM
from domain.resident_id import (
    BIRTH_DATE_MISMATCH,
    SEX_MISMATCH,
    make_resident_id,
    parse_resident_id,
)
from domain.submission import validate_envelope
from exchange.bootstrap import Endpoints, open_runtime
from exchange.ingest.ledger import Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from projections.render import DATA_QUALITY_SYSTEM
from tests.factories import (
    consent_item,
    encounter_item,
    observation_item,
    patient_item,
    resident,
)
from tests.integration.conftest import Running, registered_sender
from tests.integration.test_submissions import envelope, send
from tests.integration.test_walking_skeleton import token


def fhir_patient(rid: str, gender: str, birth_date: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "pat-77",
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": rid}],
        "name": [{"use": "official", "text": "赵桂芳"}],
        "gender": gender,
        "birthDate": birth_date,
    }


async def submit(running: Running, institution: str, items: list[dict[str, Any]]) -> dict:
    (receipt,) = await send(running, institution, [envelope(running, institution, items)])
    await running.settle()
    return receipt


async def shown_patient(running: Running, rid: str) -> dict[str, Any]:
    """The Patient of the record a county physician reads for this resident."""
    treat = {**token(running, "doctor-zhao", "county", "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=running.url) as http:
        found = await http.get(
            "/fhir/Patient", headers=treat, params={"identifier": f"{RESIDENT_ID_SYSTEM}|{rid}"}
        )
        assert found.status_code == 200, found.text
        patient_id = found.json()["entry"][0]["resource"]["id"]
        record = await http.get(f"/fhir/Patient/{patient_id}/$everything", headers=treat)
        assert record.status_code == 200, record.text
    (patient,) = [
        e["resource"] for e in record.json()["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    return dict(patient)


def tags(patient: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["system"], t["code"]) for t in patient.get("meta", {}).get("tag", [])]


async def test_a_contradicting_patient_is_accepted_and_its_record_flagged(
    exchange: Running,
) -> None:
    await exchange.register("thc-east", "township_health_centre", "东城镇卫生院")
    await exchange.register("county", "county_hospital", "县人民医院")
    rid = resident(6)  # an even sequence code: a woman
    from_id = parse_resident_id(rid)
    assert from_id.sex == "female"

    # The county hospital has seen her (and holds her signed consent), with demographics
    # that agree with her ID: no flag.
    visit = [patient_item(rid, "cty-pat"), encounter_item(rid, "cty-enc"), consent_item(rid, "c")]
    first = await submit(exchange, "county", visit)
    assert first["status"] == "accepted"
    assert tags(await shown_patient(exchange, rid)) == []

    # The township centre's system registers her as a man born a year later. Its FHIR adapter
    # warns about both and sends the Patient all the same.
    wrong_birth = from_id.birth_date.replace(year=from_id.birth_date.year + 1).isoformat()
    report = read_fhir(fhir_patient(rid, "male", wrong_birth), institution="thc-east")
    assert report.problems == [] and [i["kind"] for i in report.items] == ["patient"]
    assert [w.code for w in report.warnings] == [SEX_MISMATCH.code, BIRTH_DATE_MISMATCH.code]
    receipt = await submit(exchange, "thc-east", report.items)
    assert receipt["status"] == "accepted" and not receipt.get("problems")

    # The physician's Patient shows the demographics as last sent, and says they contradict
    # the resident ID.
    patient = await shown_patient(exchange, rid)
    assert (patient["gender"], patient["birthDate"]) == ("male", wrong_birth)
    assert tags(patient) == [
        (DATA_QUALITY_SYSTEM, SEX_MISMATCH.code),
        (DATA_QUALITY_SYSTEM, BIRTH_DATE_MISMATCH.code),
    ]
    assert all(t.get("display") for t in patient["meta"]["tag"])

    # The centre corrects its registration: the flags go with the demographics they were on.
    fixed = read_fhir(
        {**fhir_patient(rid, "female", from_id.birth_date.isoformat()), "id": "pat-77-fixed"},
        institution="thc-east",
    )
    assert fixed.warnings == []
    assert (await submit(exchange, "thc-east", fixed.items))["status"] == "accepted"
    patient = await shown_patient(exchange, rid)
    assert patient["gender"] == "female" and tags(patient) == []


# An ID whose check digit is right but whose first two digits name no province (99).
INVENTED = make_resident_id("990102", date(1961, 5, 20), 37)


async def test_the_gateway_refuses_an_invented_division_naming_item_and_field(
    exchange: Running,
) -> None:
    await exchange.register("thc-east", "township_health_centre", "东城镇卫生院")
    items = [patient_item(INVENTED, "p-99"), observation_item(INVENTED, "o-99")]
    receipt = await submit(exchange, "thc-east", items)
    assert receipt["status"] == "rejected"
    assert [(p.get("item"), p["field"], p["code"]) for p in receipt["problems"]] == [
        (0, "payload.patient.resident_id", "resident_id.division"),
        (1, "payload.patient.resident_id", "resident_id.division"),
    ]
    assert INVENTED not in json.dumps(receipt, ensure_ascii=False)
    assert await exchange.rt.records.find_patient(RESIDENT_ID_SYSTEM, INVENTED) is None


async def test_an_invented_division_the_ledger_took_before_the_rule_still_replays(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-old", "老卫生院")
        # Appended as the gateway did before it checked divisions (the models take it): a
        # man's ID (odd sequence code) on a Patient sent as a woman's.
        items = [patient_item(INVENTED, "p-old", gender="female"), observation_item(INVENTED, "o")]
        env = build_envelope(institution="thc-old", key=key, sent_at=datetime.now(UTC), items=items)
        valid, problems = validate_envelope(env)
        assert valid is not None and not problems
        await rt.sync(rt.ledger.append, [Pending(valid, json.dumps(env), datetime.now(UTC))])

        # A rebuild from the first position reads it as it was accepted, and flags it.
        projection = PatientRecordProjection(
            rt.pool, lambda a, n: rt.sync(rt.ledger.read, a, n), fields=rt.fields
        )
        await projection.rebuild()
        while await projection.catch_up_once():
            pass
        assert await projection.position() == await rt.sync(rt.ledger.max_position)
        patient = await rt.records.find_patient(RESIDENT_ID_SYSTEM, INVENTED)
        assert patient is not None
        flags = await rt.pool.fetchval(
            "SELECT quality_flags FROM patients WHERE patient_id = $1", patient
        )
        assert flags == [SEX_MISMATCH.code]
