"""The rules new items meet where they come in (domain/intake.py): a resident ID of an
invented GB/T 2260 division is refused by the gateway's checks and by the adapters that check
items through ``adapters.report.check_item`` (HL7 v2, CSV) or in FHIR's terms
(adapters/fhir_paths.py), naming the item, the field and the
rule, while an envelope the ledger took before the rule still reads as the projections read
it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given

from adapters.envelope import build_envelope, new_private_key
from adapters.fhir import read_fhir
from adapters.hl7v2 import read_hl7v2
from domain.identity import RESIDENT_ID_SYSTEM
from domain.intake import intake_problems
from domain.resident_id import make_resident_id
from domain.submission import validate_envelope
from tests.factories import encounter_item, observation_item, patient_item, resident, resident_ids
from tests.unit import csv_samples, fhir_builders, hl7v2_messages
from tests.unit.test_fhir_consent import consent

KEY = new_private_key()
INVENTED = make_resident_id("990102", date(1956, 4, 2), 124)  # check digit right, province not
DIVISION = "resident_id.division"


def sign(items: list[dict[str, Any]]) -> dict[str, Any]:
    return build_envelope(
        institution="thc-1", items=items, key=KEY, sent_at=datetime(2026, 11, 1, tzinfo=UTC)
    )


def guardian_item(rid: str, guardian: str, source_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "guardian",
        "payload": {
            "patient": {"resident_id": rid},
            "guardian": {"resident_id": guardian},
            "relationship": "parent",
            "valid_from": "2026-01-01T00:00:00+08:00",
        },
    }


def merge_item(rid: str, merged: str, source_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "merge",
        "payload": {"patient": {"resident_id": rid}, "merged": {"resident_id": merged}},
    }


def test_the_gateway_refuses_each_invented_division_at_its_item_and_field() -> None:
    items = [
        encounter_item(resident(1), "e-1"),
        patient_item(INVENTED, "p-1"),
        guardian_item(resident(2), INVENTED, "g-1"),
        merge_item(resident(3), INVENTED, "m-1"),
    ]
    # The models read the envelope (as the projections read what the ledger holds) ...
    valid, problems = validate_envelope(sign(items))
    assert problems == [] and valid is not None
    # ... and the intake rules refuse what is new.
    found = intake_problems(valid)
    assert [(p.item, p.source_id, p.field, p.code) for p in found] == [
        (1, "p-1", "payload.patient.resident_id", DIVISION),
        (2, "g-1", "payload.guardian.resident_id", DIVISION),
        (3, "m-1", "payload.merged.resident_id", DIVISION),
    ]
    assert all(INVENTED not in str(p) for p in found)


@given(resident_ids)
def test_ids_of_every_real_province_come_in(rid: str) -> None:
    valid, _ = validate_envelope(sign([patient_item(rid, "p"), observation_item(rid, "o")]))
    assert valid is not None and intake_problems(valid) == []


def refused_division(report: Any) -> list[str]:
    return [p.code for p in report.problems if p.code == DIVISION]


def test_hl7v2_a_pid_of_an_invented_division_is_refused_not_sent() -> None:
    pid = f"PID|1||{INVENTED}^^^CHN^NNCHN~MR000123^^^DCTHC^MR||王^秀英||19560402|F"
    report = read_hl7v2(hl7v2_messages.admission(pid=pid), institution=hl7v2_messages.INSTITUTION)
    assert report.items == [] and DIVISION in refused_division(report)
    assert all(INVENTED not in str(p) for p in report.problems)


def test_csv_a_resident_row_of_an_invented_division_is_refused_the_rest_sent() -> None:
    name = "taoyuan-vc-residents.csv"
    report = csv_samples.read(name, csv_samples.edited(name, {(2, "身份证号"): INVENTED}))
    assert refused_division(report) == [DIVISION]
    assert len(report.items) == csv_samples.EXPECTED[name]["patient"] - 1
    assert all(INVENTED not in str(p) for p in report.problems)


def test_fhir_a_patient_of_an_invented_division_is_refused_with_what_refers_to_it() -> None:
    invented = fhir_builders.patient(identifier=[{"system": RESIDENT_ID_SYSTEM, "value": INVENTED}])
    report = read_fhir(
        fhir_builders.bundle(invented, fhir_builders.encounter()),
        institution=fhir_builders.INSTITUTION,
    )
    assert report.items == [] and DIVISION in refused_division(report)
    assert all(INVENTED not in str(p) for p in report.problems)


def test_fhir_a_guardian_of_an_invented_division_is_refused_at_the_performer() -> None:
    parent = {
        "resourceType": "RelatedPerson",
        "id": "rp1",
        "patient": {"reference": "urn:uuid:pat-1"},
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": INVENTED}],
    }
    signed = consent(performer=[{"reference": "RelatedPerson/rp1"}])
    report = read_fhir(
        fhir_builders.bundle(fhir_builders.patient(), parent, signed),
        institution=fhir_builders.INSTITUTION,
    )
    assert [(p.code, p.field) for p in report.problems] == [
        (DIVISION, "Bundle.entry[2].resource.performer")
    ]
    assert [i["kind"] for i in report.items] == ["patient"]
