"""The FHIR R4 adapter: what it maps, what it refuses (with which problem), what it skips."""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir import read_fhir
from domain.clinical import Item, parse_payload
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from domain.resident_id import make_resident_id

INSTITUTION = "dongcheng-thc"
RID = make_resident_id("341122", date(1956, 4, 2), 124)  # synthetic; even sequence: female
NAME = "王秀英"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "fhir" \
    / "synthea-fhir-data-pipes"
SYNTHEA_FILES = sorted(SYNTHEA.glob("*.json"))


def patient(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": RID},
                           {"system": mrn_system(INSTITUTION), "value": "MR000123"}],
            "name": [{"use": "official", "family": "王", "given": ["秀英"]}],
            "gender": "female", "birthDate": "1956-04-02", **changes}


def encounter(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "serviceType": {"text": "全科门诊"}, "subject": {"reference": "urn:uuid:pat-1"},
            "period": {"start": "2026-03-02T09:10:00+08:00", "end": "2026-03-02T09:30:00+08:00"},
            "reasonCode": [{"coding": [{"system": ICD10, "code": "I10",
                                        "display": "原发性高血压"}]}],
            **changes}


def condition(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed"}]},
            "code": {"coding": [{"system": ICD10, "version": "2019", "code": "I10",
                                 "display": "原发性高血压"}]},
            "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
            "onsetDateTime": "2019-06-01", "recordedDate": "2026-03-02T09:25:00+08:00",
            **changes}


def observation(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4",
                                 "display": "糖化血红蛋白"}]},
            "subject": {"reference": "urn:uuid:pat-1"},
            "encounter": {"reference": "urn:uuid:enc-1"},
            "effectiveDateTime": "2026-03-02T09:20:00+08:00",
            "valueQuantity": {"value": Decimal("7.20"), "unit": "%",
                              "system": "http://unitsofmeasure.org", "code": "%"},
            "referenceRange": [{"low": {"value": Decimal("4.0"), "unit": "%"},
                                "high": {"value": Decimal("6.0"), "unit": "%"}}],
            "interpretation": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                "code": "H"}]}], **changes}


def bundle(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    urls = {"Patient": "urn:uuid:pat-1", "Encounter": "urn:uuid:enc-1"}
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": urls.get(r["resourceType"], f"urn:uuid:other-{n}"), "resource": r,
         "request": {"method": "POST", "url": r["resourceType"]}}
        for n, r in enumerate(resources)]}


def visit() -> dict[str, Any]:
    return bundle(patient(), encounter(), condition(), observation())


def json_bytes(doc: dict[str, Any]) -> bytes:
    """FHIR JSON text with decimals written exactly as given (7.20 stays 7.20)."""
    text = json.dumps(doc, ensure_ascii=False, default=lambda d: f"@@{d}@@")
    return re.sub(r'"@@([^@]+)@@"', r"\1", text).encode()


def by_kind(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["kind"]: item for item in items}


def assert_valid(items: list[dict[str, Any]]) -> None:
    for item in items:
        Item.model_validate(item)
        parse_payload(item["kind"], item["payload"])


def assert_no_patient_data(report: Any) -> None:
    for problem in report.problems:
        assert RID not in str(problem) and NAME not in str(problem)


def test_a_transaction_bundle_maps_to_one_valid_item_per_resource() -> None:
    # A township centre sends one visit: patient, encounter, diagnosis and a lab result.
    report = read_fhir(visit(), institution=INSTITUTION)
    assert report.problems == [] and report.skipped == []
    assert_valid(report.items)
    items = by_kind(report.items)
    assert [i["kind"] for i in report.items] == ["patient", "encounter", "condition",
                                                 "observation"]

    # The patient: resident ID, the CJK name with no space, this institution's MRN.
    pat = items["patient"]
    assert pat["source_id"] == "Patient/p1"
    assert pat["payload"] == {"patient": {"resident_id": RID, "mrn": "MR000123"}, "name": NAME,
                              "gender": "female", "birth_date": "1956-04-02"}

    # The encounter: class, status, times with their offset, department and reason.
    enc = items["encounter"]["payload"]
    assert enc["patient"] == {"resident_id": RID}
    assert (enc["encounter_class"], enc["status"]) == ("outpatient", "finished")
    assert (enc["start"], enc["end"]) == ("2026-03-02T09:10:00+08:00",
                                          "2026-03-02T09:30:00+08:00")
    assert enc["department"] == "全科门诊" and enc["reason"][0]["code"] == "I10"

    # The diagnosis keeps its ICD-10 version and points at the encounter's source_id.
    dx = items["condition"]["payload"]
    assert dx["code"] == {"system": ICD10, "version": "2019", "code": "I10",
                          "display": "原发性高血压"}
    assert (dx["clinical_status"], dx["verification_status"]) == ("active", "confirmed")
    assert (dx["onset"], dx["recorded"]) == ("2019-06-01", "2026-03-02T09:25:00+08:00")
    assert dx["encounter"] == "Encounter/e1"

    # The lab result keeps the decimal exactly as sent.
    obs = items["observation"]["payload"]
    assert obs["value_quantity"] == {"value": "7.20", "unit": "%",
                                     "system": "http://unitsofmeasure.org", "code": "%"}
    assert (obs["code"]["code"], obs["status"], obs["category"]) == ("4548-4", "final",
                                                                     "laboratory")
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
    doc = bundle(patient(), encounter(), condition(),
                 observation(subject={"reference": "Patient/elsewhere"}))
    report = read_fhir(doc, institution=INSTITUTION)
    assert [(p.code, p.field, p.source_id) for p in report.problems] == [
        ("fhir.subject_unresolved", "Bundle.entry[3].resource.subject", "Observation/o1")]
    assert [i["kind"] for i in report.items] == ["patient", "encounter", "condition"]
    assert_valid(report.items)


def test_a_patient_without_resident_id_is_refused_with_what_refers_to_it() -> None:
    # Only the MRN is given: the patient and everything about them stays unsent.
    doc = bundle(patient(identifier=[{"system": mrn_system(INSTITUTION), "value": "MR1"}]),
                 encounter(), condition(), observation())
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.no_resident_id", "Bundle.entry[0].resource.identifier"),
        *[("fhir.no_resident_id", f"Bundle.entry[{n}].resource.subject") for n in (1, 2, 3)]]
    assert_no_patient_data(report)


def test_a_resident_id_with_a_wrong_check_digit_is_refused_without_repeating_it() -> None:
    wrong = RID[:17] + ("0" if RID[17] != "0" else "1")
    doc = bundle(patient(identifier=[{"system": RESIDENT_ID_SYSTEM, "value": wrong}]),
                 observation())
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [p.code for p in report.problems] == ["resident_id.check_digit", "fhir.no_resident_id"]
    assert all(wrong not in str(p) for p in report.problems)


@pytest.mark.parametrize(("where", "resource", "field"), [
    (1, encounter(period={"start": "2026-03-02T09:10:00"}), "period.start"),
    (2, condition(recordedDate="2026-03-02T09:25:00.5"), "recordedDate"),
    (3, observation(effectiveDateTime="2026-03-02"), "effectiveDateTime"),
    (3, observation(effectiveDateTime=None, effectivePeriod={"start": "2026-03"}),
     "effectivePeriod.start"),
])
def test_a_datetime_without_timezone_is_a_problem_not_a_guess(
        where: int, resource: dict[str, Any], field: str) -> None:
    resources = [patient(), encounter(), condition(), observation()]
    resources[where] = {k: v for k, v in resource.items() if v is not None}
    report = read_fhir(bundle(*resources), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.datetime_no_timezone", f"Bundle.entry[{where}].resource.{field}")]
    assert len(report.items) == 3


@pytest.mark.parametrize(("code", "expected"), [
    ("AMB", "outpatient"), ("IMP", "inpatient"), ("ACUTE", "inpatient"), ("NONAC", "inpatient"),
    ("EMER", "emergency")])
def test_encounter_classes_map_onto_the_canonical_set(code: str, expected: str) -> None:
    enc = encounter(**{"class": {"code": code}}, status="triaged")
    report = read_fhir(bundle(patient(), enc), institution=INSTITUTION)
    payload = by_kind(report.items)["encounter"]["payload"]
    assert (payload["encounter_class"], payload["status"]) == (expected, "arrived")


def test_codes_the_canonical_model_does_not_take_are_problems() -> None:
    # fhir.resources checks structure, not codes: a bogus status gets through it, not past us.
    doc = bundle(patient(), encounter(**{"class": {"code": "HH"}}), condition(),
                 observation(status="bogus"))
    report = read_fhir(doc, institution=INSTITUTION)
    assert {(p.code, p.field) for p in report.problems} == {
        ("fhir.encounter_class", "Bundle.entry[1].resource.class"),
        ("literal_error", "Bundle.entry[3].resource.status")}
    assert [i["kind"] for i in report.items] == ["patient", "condition"]


def test_unmapped_resource_types_are_skipped_not_refused() -> None:
    claim = {"resourceType": "Claim", "id": "cl1"}
    org = {"resourceType": "Organization", "id": "org1", "name": "东城镇卫生院"}
    report = read_fhir(bundle(patient(), claim, org, kind="collection"),
                       institution=INSTITUTION)
    assert report.problems == [] and len(report.items) == 1
    assert report.skipped == ["Bundle.entry[1] Claim: resource type not mapped",
                              "Bundle.entry[2] Organization: resource type not mapped"]


def test_western_names_put_given_names_first_and_name_text_wins() -> None:
    western = patient(name=[{"family": "Smith", "given": ["Anna", "Lee"]}])
    assert read_fhir(western, institution=INSTITUTION).items[0]["payload"]["name"] == \
        "Anna Lee Smith"
    texted = patient(name=[{"text": "欧阳春燕", "family": "欧", "given": ["阳春燕"]}])
    assert read_fhir(texted, institution=INSTITUTION).items[0]["payload"]["name"] == "欧阳春燕"


def test_malformed_documents_are_problems() -> None:
    assert read_fhir(b"\xff\xfe{", institution=INSTITUTION).problems[0].code == "fhir.json"
    assert read_fhir("[1, 2]", institution=INSTITUTION).problems[0].code == "fhir.not_a_resource"
    assert read_fhir({"type": "Patient"}, institution=INSTITUTION).problems[0].code == \
        "fhir.resource_type"
    history = read_fhir(bundle(patient(), kind="history"), institution=INSTITUTION)
    assert [p.code for p in history.problems] == ["fhir.bundle_type"]
    # A structural error in one resource leaves the others alone.
    report = read_fhir(bundle(patient(name="王秀英"), encounter()), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.list_type", "Bundle.entry[0].resource.name"),
        ("fhir.subject_unresolved", "Bundle.entry[1].resource.subject")]
    assert_no_patient_data(report)


# The Synthea sample bundles (US synthetic patients; used as they are) ------------------------

def test_the_synthea_samples_are_present() -> None:
    assert len(SYNTHEA_FILES) >= 4, f"expected the Synthea sample bundles under {SYNTHEA}"


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda p: p.stem[:12])
def test_synthea_bundles_are_read_refused_for_no_resident_id_and_skipped(path: Path) -> None:
    doc = json.loads(path.read_bytes())
    report = read_fhir(path.read_bytes(), institution=INSTITUTION)
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    # Nothing is sent: they carry no Chinese resident ID.
    assert report.items == []
    assert report.skipped, "unmapped types (Claim, Organization, ...) are listed"
    mapped = sum(t in {"Patient", "Encounter", "Condition", "Observation"} for t in types)
    assert len(report.skipped) == len(types) - mapped
    if "Patient" in types:
        # One problem for the patient, one per resource about them; none repeats patient data.
        assert {p.code for p in report.problems} == {"fhir.no_resident_id"}
        assert len(report.problems) == mapped
        assert any(s.endswith("Claim: resource type not mapped") for s in report.skipped)
        person = next(e["resource"] for e in doc["entry"]
                      if e["resource"]["resourceType"] == "Patient")
        secrets = [person["name"][0]["family"], *person["name"][0]["given"],
                   *(i["value"] for i in person["identifier"])]
        assert not [s for s in secrets for p in report.problems if s in p.message]
    else:  # the organisation and practitioner directories: nothing to map, nothing wrong
        assert report.problems == []


# Nothing a sender can send makes the adapter raise -------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_arbitrary_json_objects_become_problems_not_exceptions(doc: dict[str, Any]) -> None:
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems or report.skipped
    assert report.items == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_become_problems_not_exceptions(raw: bytes) -> None:
    report = read_fhir(raw, institution=INSTITUTION)
    assert report.problems and report.items == []


def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, for the mutation test below."""
    inner = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    return [at, *(p for key, child in inner for p in paths(child, (*at, key)))]


VISIT_PATHS = paths(visit())[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VISIT_PATHS), json_values)
def test_a_visit_with_any_one_part_replaced_never_raises_and_items_stay_valid(
        where: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(visit())
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    report = read_fhir(doc, institution=INSTITUTION)
    assert_valid(report.items)
    assert len(report.items) <= 4
    assert_no_patient_data(report)
