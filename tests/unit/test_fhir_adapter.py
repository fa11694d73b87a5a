"""The FHIR R4 adapter on one visit: what it maps, what it refuses (with which problem), what it
skips. The chart, references and robustness tests are in the test_fhir_*.py beside it."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.fhir import read_fhir
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from tests.unit.fhir_builders import (
    HEALTH_CARD,
    ICD10,
    INSTITUTION,
    NAME,
    RID,
    V2_0203,
    assert_no_patient_data,
    assert_valid,
    bundle,
    by_kind,
    condition,
    encounter,
    json_bytes,
    observation,
    patient,
    visit,
)


def test_a_transaction_bundle_maps_to_one_valid_item_per_resource() -> None:
    # A township centre sends one visit: patient, encounter, diagnosis and a lab result.
    report = read_fhir(visit(), institution=INSTITUTION)
    assert report.problems == [] and report.skipped == []
    assert_valid(report.items)
    items = by_kind(report.items)
    assert [i["kind"] for i in report.items] == ["patient", "encounter", "condition", "observation"]

    # The patient: resident ID, the CJK name with no space, this institution's MRN.
    pat = items["patient"]
    assert pat["source_id"] == "Patient/p1"
    assert pat["payload"] == {
        "patient": {"resident_id": RID, "mrn": "MR000123"},
        "name": NAME,
        "gender": "female",
        "birth_date": "1956-04-02",
    }

    # The encounter: class, status, times with their offset, department and reason.
    enc = items["encounter"]["payload"]
    assert enc["patient"] == {"resident_id": RID, "mrn": "MR000123"}  # the same as the Patient's
    assert (enc["encounter_class"], enc["status"]) == ("outpatient", "finished")
    assert (enc["start"], enc["end"]) == ("2026-03-02T09:10:00+08:00", "2026-03-02T09:30:00+08:00")
    assert enc["department"] == "全科门诊" and enc["reason"][0]["code"] == "I10"

    # The diagnosis keeps its ICD-10 version and points at the encounter's source_id.
    dx = items["condition"]["payload"]
    assert dx["code"] == {
        "system": ICD10,
        "version": "2019",
        "code": "I10",
        "display": "原发性高血压",
    }
    assert (dx["clinical_status"], dx["verification_status"]) == ("active", "confirmed")
    assert (dx["onset"], dx["recorded"]) == ("2019-06-01", "2026-03-02T09:25:00+08:00")
    assert dx["encounter"] == "Encounter/e1"

    # The lab result keeps the decimal exactly as sent.
    obs = items["observation"]["payload"]
    assert obs["value_quantity"] == {
        "value": "7.20",
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert (obs["code"]["code"], obs["status"], obs["category"]) == (
        "4548-4",
        "final",
        "laboratory",
    )
    assert obs["effective"] == "2026-03-02T09:20:00+08:00"
    assert obs["reference_range"]["low"]["value"] == "4.0"
    assert obs["interpretation"]["code"] == "H" and obs["encounter"] == "Encounter/e1"


def test_bytes_with_a_bom_map_like_the_dict_and_keep_decimal_text() -> None:
    # A Windows HIS export: UTF-8 with a byte-order mark, the decimal written as 7.20.
    raw = b"\xef\xbb\xbf" + json_bytes(visit())
    assert b"7.20" in raw
    report = read_fhir(raw, institution=INSTITUTION)
    assert report.problems == []
    assert report.items == read_fhir(visit(), institution=INSTITUTION).items
    # The same as str, BOM included.
    assert read_fhir(raw.decode("utf-8"), institution=INSTITUTION).items == report.items


def test_a_single_resource_maps_on_its_own() -> None:
    # A lone Patient ...
    report = read_fhir(patient(), institution=INSTITUTION)
    assert report.problems == [] and [i["kind"] for i in report.items] == ["patient"]
    # ... and a lone Observation naming its patient by resident ID (a logical reference).
    obs = observation(subject={"identifier": {"system": RESIDENT_ID_SYSTEM, "value": RID}})
    del obs["encounter"]
    report = read_fhir(obs, institution=INSTITUTION)
    assert report.problems == []
    assert report.items[0]["payload"]["patient"] == {"resident_id": RID}
    assert report.items[0]["source_id"] == "Observation/o1"


def test_an_unresolved_subject_is_a_problem_and_the_rest_still_maps() -> None:
    # The observation points at a patient that is not in the bundle.
    doc = bundle(
        patient(), encounter(), condition(), observation(subject={"reference": "Patient/elsewhere"})
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert [(p.code, p.field, p.source_id) for p in report.problems] == [
        ("fhir.subject_unresolved", "Bundle.entry[3].resource.subject", "Observation/o1")
    ]
    assert [i["kind"] for i in report.items] == ["patient", "encounter", "condition"]
    assert_valid(report.items)


def test_a_patient_with_only_an_mrn_maps_and_everything_about_them_carries_it() -> None:
    # A newborn has no resident ID yet: the centre names her by its own MRN.
    doc = bundle(
        patient(identifier=[{"system": mrn_system(INSTITUTION), "value": "MR1"}]),
        encounter(),
        condition(),
        observation(),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == []
    assert [i["payload"]["patient"] for i in report.items] == [{"mrn": "MR1"}] * 4


@pytest.mark.parametrize(
    ("identifiers", "expected"),
    [
        # The MRN may be typed MR (v2-0203) under the sender's own system name ...
        (
            [
                {
                    "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                    "system": "urn:his:dc",
                    "value": "H77",
                }
            ],
            {"mrn": "H77"},
        ),
        # ... the resident health card (居民健康卡) is enough on its own ...
        ([{"system": HEALTH_CARD, "value": "HC3411220001"}], {"health_card": "HC3411220001"}),
        # ... and every identifier the patient has is carried, so the exchange can link them.
        (
            [
                {"system": RESIDENT_ID_SYSTEM, "value": RID},
                {"system": HEALTH_CARD, "value": "HC99887766"},
                {"system": mrn_system(INSTITUTION), "value": "MR2"},
            ],
            {"resident_id": RID, "mrn": "MR2", "health_card": "HC99887766"},
        ),
    ],
)
def test_patients_are_named_by_resident_id_mrn_or_health_card(
    identifiers: list[dict[str, Any]], expected: dict[str, str]
) -> None:
    report = read_fhir(
        bundle(patient(identifier=identifiers), observation()), institution=INSTITUTION
    )
    assert report.problems == []
    assert [i["payload"]["patient"] for i in report.items] == [expected, expected]


def test_a_patient_with_no_linkable_identifier_is_refused_with_what_refers_to_it() -> None:
    # Only a passport number and two MR-typed numbers of which neither is said to be ours.
    typed = {"coding": [{"system": V2_0203, "code": "MR"}]}
    doc = bundle(
        patient(
            identifier=[
                {"system": "urn:passport", "value": "E12345678"},
                {"type": typed, "system": "urn:his:a", "value": "A1"},
                {"type": typed, "system": "urn:his:b", "value": "B2"},
            ]
        ),
        encounter(),
        condition(),
        observation(),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.no_patient_identifier", "Bundle.entry[0].resource.identifier"),
        *[("fhir.subject_refused", f"Bundle.entry[{n}].resource.subject") for n in (1, 2, 3)],
    ]
    # The problem says what was looked for.
    message = report.problems[0].message
    assert RESIDENT_ID_SYSTEM in message and mrn_system(INSTITUTION) in message
    assert "MR" in message and HEALTH_CARD in message
    assert "several identifiers are typed MR" in message
    assert_no_patient_data(report)
    assert all("E12345678" not in str(p) for p in report.problems)


def test_a_malformed_health_card_is_refused_like_a_wrong_resident_id() -> None:
    doc = bundle(
        patient(
            identifier=[
                {"system": RESIDENT_ID_SYSTEM, "value": RID},
                {"system": HEALTH_CARD, "value": "HC-12"},
            ]
        ),
        observation(),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [
        ("value.format", "Bundle.entry[0].resource.identifier"),
        ("fhir.subject_refused", "Bundle.entry[1].resource.subject"),
    ]
    assert "health card" in report.problems[0].message
    assert all("HC-12" not in str(p) for p in report.problems)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AMB", "outpatient"),
        ("IMP", "inpatient"),
        ("ACUTE", "inpatient"),
        ("NONAC", "inpatient"),
        ("EMER", "emergency"),
    ],
)
def test_encounter_classes_map_onto_the_canonical_set(code: str, expected: str) -> None:
    enc = encounter(**{"class": {"code": code}}, status="triaged")
    report = read_fhir(bundle(patient(), enc), institution=INSTITUTION)
    payload = by_kind(report.items)["encounter"]["payload"]
    assert (payload["encounter_class"], payload["status"]) == (expected, "arrived")


def test_codes_the_canonical_model_does_not_take_are_problems() -> None:
    # fhir.resources checks structure, not codes: a bogus status gets through it, not past us.
    doc = bundle(
        patient(),
        encounter(**{"class": {"code": "HOME"}}),
        condition(),
        observation(status="bogus"),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert {(p.code, p.field) for p in report.problems} == {
        ("fhir.encounter_class", "Bundle.entry[1].resource.class"),
        ("value.not_allowed", "Bundle.entry[3].resource.status"),
    }
    assert [i["kind"] for i in report.items] == ["patient", "condition"]


def test_unmapped_resource_types_are_skipped_not_refused() -> None:
    claim = {"resourceType": "Claim", "id": "cl1"}
    org = {"resourceType": "Organization", "id": "org1", "name": "东城镇卫生院"}
    report = read_fhir(bundle(patient(), claim, org, kind="collection"), institution=INSTITUTION)
    assert report.problems == [] and len(report.items) == 1
    assert report.skipped == [
        "Bundle.entry[1] Claim: resource type not mapped",
        "Bundle.entry[2] Organization: resource type not mapped",
    ]


def test_western_names_put_given_names_first_and_name_text_wins() -> None:
    western = patient(name=[{"family": "Smith", "given": ["Anna", "Lee"]}])
    assert (
        read_fhir(western, institution=INSTITUTION).items[0]["payload"]["name"] == "Anna Lee Smith"
    )
    texted = patient(name=[{"text": "欧阳春燕", "family": "欧", "given": ["阳春燕"]}])
    assert read_fhir(texted, institution=INSTITUTION).items[0]["payload"]["name"] == "欧阳春燕"


def test_malformed_documents_are_problems() -> None:
    assert read_fhir(b"\xff\xfe{", institution=INSTITUTION).problems[0].code == "fhir.json"
    assert read_fhir("[1, 2]", institution=INSTITUTION).problems[0].code == "fhir.not_a_resource"
    assert (
        read_fhir({"type": "Patient"}, institution=INSTITUTION).problems[0].code
        == "fhir.resource_type"
    )
    unknown = read_fhir(bundle(patient(), kind="archive"), institution=INSTITUTION)
    assert [p.code for p in unknown.problems] == ["fhir.bundle_type"]
    # A structural error in one resource leaves the others alone.
    report = read_fhir(bundle(patient(name="王秀英"), encounter()), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.value.not_list", "Bundle.entry[0].resource.name"),
        ("fhir.subject_unresolved", "Bundle.entry[1].resource.subject"),
    ]
    assert_no_patient_data(report)
