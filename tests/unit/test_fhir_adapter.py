"""The FHIR R4 adapter: what it maps, what it refuses (with which problem), what it skips."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir import read_fhir
from adapters.fhir_resources import MAPPERS
from adapters.report import check_item
from domain.clinical import Item, parse_payload
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system
from domain.resident_id import make_resident_id

INSTITUTION = "dongcheng-thc"
HEALTH_CARD = "urn:county-hie:health-card"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
RID = make_resident_id("341122", date(1956, 4, 2), 124)  # synthetic; even sequence: female
NAME = "王秀英"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "fhir" \
    / "synthea-fhir-data-pipes"
SYNTHEA_FILES = sorted(SYNTHEA.glob("*.json"))
MAPPED = set(MAPPERS)


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
    assert enc["patient"] == {"resident_id": RID, "mrn": "MR000123"}  # the same as the Patient's
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


def test_a_patient_with_only_an_mrn_maps_and_everything_about_them_carries_it() -> None:
    # A newborn has no resident ID yet: the centre names her by its own MRN.
    doc = bundle(patient(identifier=[{"system": mrn_system(INSTITUTION), "value": "MR1"}]),
                 encounter(), condition(), observation())
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == []
    assert [i["payload"]["patient"] for i in report.items] == [{"mrn": "MR1"}] * 4


@pytest.mark.parametrize(("identifiers", "expected"), [
    # The MRN may be typed MR (v2-0203) under the sender's own system name ...
    ([{"type": {"coding": [{"system": V2_0203, "code": "MR"}]}, "system": "urn:his:dc",
       "value": "H77"}], {"mrn": "H77"}),
    # ... the resident health card (居民健康卡) is enough on its own ...
    ([{"system": HEALTH_CARD, "value": "HC3411220001"}], {"health_card": "HC3411220001"}),
    # ... and every identifier the patient has is carried, so the exchange can link them.
    ([{"system": RESIDENT_ID_SYSTEM, "value": RID}, {"system": HEALTH_CARD, "value": "HC99887766"},
      {"system": mrn_system(INSTITUTION), "value": "MR2"}],
     {"resident_id": RID, "mrn": "MR2", "health_card": "HC99887766"}),
])
def test_patients_are_named_by_resident_id_mrn_or_health_card(
        identifiers: list[dict[str, Any]], expected: dict[str, str]) -> None:
    report = read_fhir(bundle(patient(identifier=identifiers), observation()),
                       institution=INSTITUTION)
    assert report.problems == []
    assert [i["payload"]["patient"] for i in report.items] == [expected, expected]


def test_a_patient_with_no_linkable_identifier_is_refused_with_what_refers_to_it() -> None:
    # Only a passport number and two MR-typed numbers of which neither is said to be ours.
    typed = {"coding": [{"system": V2_0203, "code": "MR"}]}
    doc = bundle(patient(identifier=[
        {"system": "urn:passport", "value": "E12345678"},
        {"type": typed, "system": "urn:his:a", "value": "A1"},
        {"type": typed, "system": "urn:his:b", "value": "B2"}]),
        encounter(), condition(), observation())
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.no_patient_identifier", "Bundle.entry[0].resource.identifier"),
        *[("fhir.subject_refused", f"Bundle.entry[{n}].resource.subject") for n in (1, 2, 3)]]
    # The problem says what was looked for.
    message = report.problems[0].message
    assert RESIDENT_ID_SYSTEM in message and mrn_system(INSTITUTION) in message
    assert "MR" in message and HEALTH_CARD in message
    assert "several identifiers are typed MR" in message
    assert_no_patient_data(report)
    assert all("E12345678" not in str(p) for p in report.problems)


def test_a_malformed_health_card_is_refused_like_a_wrong_resident_id() -> None:
    doc = bundle(patient(identifier=[{"system": RESIDENT_ID_SYSTEM, "value": RID},
                                     {"system": HEALTH_CARD, "value": "HC-12"}]), observation())
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [
        ("string_pattern_mismatch", "Bundle.entry[0].resource.identifier"),
        ("fhir.subject_refused", "Bundle.entry[1].resource.subject")]
    assert "health_card" in report.problems[0].message
    assert all("HC-12" not in str(p) for p in report.problems)


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


# A whole chart: prescriptions, a dispense, a procedure, a vaccine, an allergy, a document ------

DISCHARGE = "出院小结：血压控制平稳，出院后继续服用硝苯地平缓释片，每日一次。".encode()
DISCHARGE_SHA256 = hashlib.sha256(DISCHARGE).hexdigest()
SNOMED = "http://snomed.info/sct"
STAFF = "urn:county-hie:staff:dongcheng-thc"  # the centre's own staff numbers
HOSPITAL_OID = "urn:oid:1.2.156.112604.1.1"  # an (invented) organisation registry for tests
REGISTERED = {f"{HOSPITAL_OID}|12341122000001": "county-hospital"}


def medication_request(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": "rx1", "status": "active",
            "intent": "order", "subject": {"reference": "urn:uuid:pat-1"},
            "encounter": {"reference": "Encounter/e1"},
            "medicationReference": {"reference": "Medication/m1"},
            "authoredOn": "2026-03-02T09:28:00+08:00",
            "requester": {"reference": f"Practitioner?identifier={STAFF}|D017"},
            "dosageInstruction": [{
                "text": "每日一次，每次1片，口服",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "口服"}]},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "片"}}]}],
            "dispenseRequest": {"quantity": {"value": 30, "unit": "片"},
                                "expectedSupplyDuration": {"value": 30, "unit": "天",
                                                           "code": "d"}},
            **changes}


def medication(**changes: Any) -> dict[str, Any]:
    # A local drug code with no system: it is this centre's own code.
    return {"resourceType": "Medication", "id": "m1",
            "code": {"coding": [{"code": "YP0317", "display": "硝苯地平缓释片"}]}, **changes}


def dispense(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "MedicationDispense", "id": "md1", "status": "completed",
            "contained": [medication(id="m")], "medicationReference": {"reference": "#m"},
            "subject": {"reference": "Patient/p1"},
            "authorizingPrescription": [{"reference": "MedicationRequest/rx1"}],
            "quantity": {"value": 30, "unit": "片"},
            "daysSupply": {"value": 30, "unit": "天", "code": "d"},
            "whenHandedOver": "2026-03-02T09:40:00+08:00", **changes}


def procedure(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": "pr1", "status": "completed",
            "code": {"coding": [{"system": SNOMED, "code": "29303009",
                                 "display": "心电图检查"}]},
            "subject": {"reference": "urn:uuid:pat-1"},
            "encounter": {"reference": "urn:uuid:enc-1"},
            "performedDateTime": "2026-03-02T09:15:00+08:00",
            "performer": [{"actor": {
                "reference": f"Organization?identifier={HOSPITAL_OID}|12341122000001"}}],
            **changes}


def immunization(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Immunization", "id": "im1", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08",
                                        "display": "乙肝疫苗"}]},
            "patient": {"reference": "urn:uuid:pat-1"},
            "occurrenceDateTime": "2026-03-02T09:35:00+08:00", "lotNumber": "B202601",
            "protocolApplied": [{"doseNumberPositiveInt": 2}], **changes}


def allergy(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "id": "al1",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"code": "confirmed"}]},
            "category": ["medication"], "criticality": "high",
            "code": {"coding": [{"code": "QMS", "display": "青霉素"}]},
            "patient": {"reference": "Patient/p1"},
            "reaction": [{"manifestation": [{"coding": [{"system": SNOMED, "code": "271807003",
                                                         "display": "皮疹"}]}]}],
            "recordedDate": "2026-03-02T09:12:00+08:00", **changes}


def document(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": "doc1", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5",
                                 "display": "Discharge summary"}]},
            "description": "出院小结", "subject": {"reference": "urn:uuid:pat-1"},
            "date": "2026-03-05T10:00:00+08:00",
            "author": [{"reference": "Practitioner/li"}],
            "content": [{"attachment": {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(DISCHARGE).decode(),
                "hash": base64.b64encode(hashlib.sha1(DISCHARGE).digest()).decode(),
                "size": len(DISCHARGE)}}],
            "context": {"encounter": [{"reference": "Encounter/e1"}]}, **changes}


def doctor() -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": "li",
            "identifier": [{"system": STAFF, "value": "D017"}], "name": [{"text": "李建国"}]}


def chart() -> dict[str, Any]:
    return bundle(patient(), encounter(), medication(), medication_request(),
                  medication_request(id="rx2", medicationReference=None, medicationCodeableConcept={
                      "coding": [{"system": "http://www.whocc.no/atc", "code": "C08CA05",
                                  "display": "硝苯地平"}]}),
                  dispense(), procedure(), immunization(), allergy(), document(), doctor())


CHART_KINDS = ["patient", "encounter", "medication_request", "medication_request",
               "medication_dispense", "procedure", "immunization", "allergy", "document"]


def test_a_chart_maps_every_clinical_resource_type() -> None:
    # 王秀英's visit: two prescriptions, the dispense, an ECG, a vaccine, an allergy, a summary.
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    assert report.problems == []
    assert [i["kind"] for i in report.items] == CHART_KINDS
    assert_valid(report.items)
    # The Medication and the Practitioner only resolve references: they are not sent.
    assert report.skipped == ["Bundle.entry[2] Medication: resource type not mapped",
                              "Bundle.entry[10] Practitioner: resource type not mapped"]
    # Every item names 王秀英 the way her Patient does.
    assert {json.dumps(i["payload"]["patient"]) for i in report.items} == {
        json.dumps({"resident_id": RID, "mrn": "MR000123"})}


def test_a_prescription_resolves_its_medication_and_its_prescriber_in_the_bundle() -> None:
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    rx, rx2, dispensed = (i["payload"] for i in report.items[2:5])
    # The drug comes from the Medication it refers to; its local code gets the centre's system.
    assert rx["medication"] == {"system": f"urn:county-hie:local:{INSTITUTION}",
                                "code": "YP0317", "display": "硝苯地平缓释片"}
    assert (rx["status"], rx["intent"], rx["authored"]) == ("active", "order",
                                                            "2026-03-02T09:28:00+08:00")
    assert (rx["dosage_text"], rx["frequency"]) == ("每日一次，每次1片，口服", "1/1d")
    assert rx["dose"]["unit"] == "片" and rx["quantity"]["value"] == "30"
    assert rx["duration_days"] == 30 and rx["route"]["code"] == "26643006"
    # Practitioner?identifier=... is the doctor in the bundle.
    assert rx["requester"] == "李建国" and rx["encounter"] == "Encounter/e1"
    # A drug given as a code keeps its system.
    assert rx2["medication"]["system"] == "http://www.whocc.no/atc"
    # The dispense: its contained Medication, and the prescription it fills.
    assert dispensed["medication"]["code"] == "YP0317"
    assert dispensed["prescription"] == "MedicationRequest/rx1"
    assert (dispensed["days_supply"], dispensed["handed_over"]) == (
        30, "2026-03-02T09:40:00+08:00")


def test_procedure_immunization_and_allergy_keep_their_codes() -> None:
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    done, vaccine, allergic = (i["payload"] for i in report.items[5:8])
    # The ECG was done by the county hospital: a registered institution, named by its code.
    assert done["code"]["code"] == "29303009" and done["performer"] == "county-hospital"
    assert (done["performed"], done["encounter"]) == ("2026-03-02T09:15:00+08:00",
                                                      "Encounter/e1")
    assert vaccine["vaccine"] == {"system": "http://hl7.org/fhir/sid/cvx", "code": "08",
                                  "display": "乙肝疫苗"}
    assert (vaccine["lot_number"], vaccine["dose_number"]) == ("B202601", 2)
    # 青霉素: a local code, the centre's system.
    assert allergic["substance"] == {"system": f"urn:county-hie:local:{INSTITUTION}",
                                     "code": "QMS", "display": "青霉素"}
    assert (allergic["category"], allergic["criticality"]) == ("medication", "high")
    assert allergic["reactions"][0]["display"] == "皮疹"


def test_a_discharge_summary_is_sent_with_its_sha256() -> None:
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    summary = report.items[8]
    assert summary["source_id"] == "DocumentReference/doc1"
    doc = summary["payload"]
    # FHIR's hash is SHA-1 (checked); the exchange's is the SHA-256 of the decoded content.
    assert (doc["sha256"], doc["size"]) == (DISCHARGE_SHA256, len(DISCHARGE))
    assert base64.b64decode(doc["data"]) == DISCHARGE
    # charset=utf-8 is what the exchange assumes; the type keeps no parameters.
    assert (doc["content_type"], doc["title"]) == ("text/plain", "出院小结")
    assert doc["type"]["code"] == "18842-5" and doc["author"] == "李建国"
    assert (doc["created"], doc["encounter"]) == ("2026-03-05T10:00:00+08:00", "Encounter/e1")


def attachment(**fields: Any) -> dict[str, Any]:
    return document(content=[{"attachment": {"contentType": "application/pdf", **fields}}])


@pytest.mark.parametrize(("resource", "problem"), [
    # Only a link and FHIR's SHA-1: the exchange cannot name the document.
    (attachment(url="https://his.example/doc1.pdf",
                hash=base64.b64encode(hashlib.sha1(DISCHARGE).digest()).decode(), size=9),
     ("fhir.document_no_sha256", "content[0].attachment")),
    (attachment(url="https://his.example/doc1.pdf"),
     ("fhir.document_no_sha256", "content[0].attachment")),
    # A SHA-1 that is not that of the data.
    (attachment(data=base64.b64encode(DISCHARGE).decode(),
                hash=base64.b64encode(hashlib.sha1(b"other").digest()).decode()),
     ("fhir.attachment_hash", "content[0].attachment.hash")),
    (attachment(data=base64.b64encode(DISCHARGE).decode(), size=3),
     ("fhir.attachment_size", "content[0].attachment.size")),
    # A GB18030 text cannot keep its charset in the canonical content type.
    (document(content=[{"attachment": {"contentType": "text/plain; charset=GB18030",
                                       "data": base64.b64encode(DISCHARGE).decode()}}]),
     ("fhir.content_type_parameter", "content[0].attachment.contentType")),
])
def test_a_document_whose_sha256_cannot_be_had_or_checked_is_refused(
        resource: dict[str, Any], problem: tuple[str, str]) -> None:
    report = read_fhir(bundle(patient(), resource), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        (problem[0], f"Bundle.entry[1].resource.{problem[1]}")]
    assert [i["kind"] for i in report.items] == ["patient"]


def test_a_document_kept_at_the_sender_goes_by_a_sha256_hash_and_size() -> None:
    sha256 = hashlib.sha256(DISCHARGE).digest()
    resource = attachment(url="https://his.example/doc1.pdf",
                          hash=base64.b64encode(sha256).decode(), size=len(DISCHARGE))
    report = read_fhir(bundle(patient(), resource), institution=INSTITUTION)
    assert report.problems == []
    doc = report.items[1]["payload"]
    assert (doc["sha256"], doc["size"], "data" in doc) == (DISCHARGE_SHA256, len(DISCHARGE),
                                                           False)


def report_resource(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "id": "rep1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "11524-6",
                                 "display": "心电图报告"}]},
            "subject": {"reference": "urn:uuid:pat-1"},
            "issued": "2026-03-02T09:50:00+08:00",
            "presentedForm": [{"contentType": "text/plain",
                               "data": base64.b64encode("窦性心律".encode()).decode()}],
            **changes}


def test_a_diagnostic_report_with_a_presented_form_is_a_document() -> None:
    report = read_fhir(bundle(patient(), report_resource()), institution=INSTITUTION)
    assert report.problems == []
    doc = report.items[1]
    assert (doc["kind"], doc["source_id"]) == ("document", "DiagnosticReport/rep1")
    assert doc["payload"]["title"] == "心电图报告"
    assert doc["payload"]["sha256"] == hashlib.sha256("窦性心律".encode()).hexdigest()
    # Without one, its results are its Observations: nothing more to send, and it says so.
    bare = read_fhir(bundle(patient(), report_resource(presentedForm=None,
                                                       result=[{"reference": "Observation/o1"}])),
                     institution=INSTITUTION)
    assert bare.problems == [] and len(bare.items) == 1
    assert bare.skipped == ["Bundle.entry[1].resource: no presentedForm: a report's results "
                            "are sent as their Observations"]


def test_blood_pressure_components_are_observations_of_their_own() -> None:
    # A panel with no value: systolic and diastolic are its components (as Synthea sends).
    def component(code: str, value: int) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    panel = observation(id="bp", valueQuantity=None, referenceRange=None, interpretation=None,
                        encounter=None,
                        code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                        component=[component("8480-6", 152), component("8462-4", 94)])
    report = read_fhir(bundle(patient(), {k: v for k, v in panel.items() if v is not None}),
                       institution=INSTITUTION)
    assert report.problems == []
    systolic, diastolic = report.items[1:]
    assert (systolic["source_id"], diastolic["source_id"]) == ("Observation/bp#0",
                                                               "Observation/bp#1")
    assert systolic["payload"]["code"]["code"] == "8480-6"
    assert diastolic["payload"]["value_quantity"]["value"] == "94"
    # Each keeps the panel's time, status, category and patient.
    assert diastolic["payload"]["effective"] == "2026-03-02T09:20:00+08:00"
    assert diastolic["payload"]["category"] == "laboratory"
    assert report.skipped == ["Bundle.entry[1].resource: a panel with no value of its own: its "
                              "2 component(s) are sent as observations of their own, source_id "
                              "suffixed #0 to #1"]
    # A result with a value of its own and components is sent whole as well.
    both = read_fhir(bundle(patient(), encounter(), observation(
        component=[component("8480-6", 152)])), institution=INSTITUTION)
    assert [i["source_id"] for i in both.items[2:]] == ["Observation/o1", "Observation/o1#0"]


ERROR = {"status": "entered-in-error"}
ERROR_VERIFIED = {"verificationStatus": {"coding": [{"code": "entered-in-error"}]}}


@pytest.mark.parametrize(("resource", "field"), [
    (encounter(**ERROR), "status"), (observation(**ERROR), "status"),
    (condition(**ERROR_VERIFIED), "verificationStatus"), (medication_request(**ERROR), "status"),
    (dispense(**ERROR), "status"), (procedure(**ERROR), "status"),
    (immunization(**ERROR), "status"), (allergy(**ERROR_VERIFIED), "verificationStatus"),
    (document(**ERROR), "status"), (report_resource(**ERROR), "status"),
], ids=lambda v: v["resourceType"] if isinstance(v, dict) else v)
def test_entered_in_error_is_refused_with_a_pointer_to_retract(
        resource: dict[str, Any], field: str) -> None:
    report = read_fhir(bundle(patient(), medication(), resource), institution=INSTITUTION)
    [problem] = report.problems
    assert (problem.code, problem.field) == ("fhir.entered_in_error",
                                             f"Bundle.entry[2].resource.{field}")
    assert "retract" in problem.message
    assert problem.source_id == f"{resource['resourceType']}/{resource['id']}"
    assert [i["kind"] for i in report.items] == ["patient"]


# References: conditional, logical, registered, unresolvable ------------------------------------

def test_registered_institutions_resolve_organisations_by_identifier_or_code() -> None:
    # Named by a registry identifier listed in the map, or by the consortium's institution code.
    for reference in (f"Organization?identifier={HOSPITAL_OID}|12341122000001",
                      "Organization?identifier=urn:county-hie:institution|county-hospital"):
        report = read_fhir(bundle(patient(), encounter(), procedure(performer=[{"actor": {
            "reference": reference}}])), institution=INSTITUTION, institutions=REGISTERED)
        assert report.problems == [] and report.skipped == []
        assert report.items[2]["payload"]["performer"] == "county-hospital"
    # Without the map the same reference resolves to nothing: the procedure maps without it.
    report = read_fhir(bundle(patient(), encounter(), procedure()), institution=INSTITUTION)
    assert report.problems == [] and "performer" not in report.items[2]["payload"]
    assert report.skipped == [
        "Bundle.entry[2].resource.performer[0].actor: is a conditional reference whose "
        "identifier matches no Organization in this document, its directories or the "
        "registered institutions; it is left out"]


def test_an_unresolved_display_reference_does_not_sink_the_item() -> None:
    # The attending is named by a staff number the bundle does not hold; the display stands in.
    enc = encounter(participant=[{
        "type": [{"coding": [{"code": "ATND"}]}],
        "individual": {"reference": f"Practitioner?identifier={STAFF}|D999",
                       "display": "张医生"}}])
    report = read_fhir(bundle(patient(), enc), institution=INSTITUTION)
    assert report.problems == []
    assert report.items[1]["payload"]["attending"] == "张医生"
    [line] = report.skipped
    assert line.startswith("Bundle.entry[1].resource.participant[0].individual: ")
    assert "display text is used" in line and "D999" not in line


@pytest.mark.parametrize(("reference", "why"), [
    ("Practitioner?name=李", "search parameters other than identifier"),
    (f"Practitioner?identifier={STAFF}|D017", "matches more than one"),
    ("Organization/nowhere", "refers to no resource in this document"),
])
def test_references_that_cannot_be_resolved_are_reported(reference: str, why: str) -> None:
    doc = bundle(patient(), medication(), medication_request(requester={"reference": reference}),
                 doctor(), doctor() | {"id": "li2"})
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == [] and "requester" not in report.items[1]["payload"]
    assert [s for s in report.skipped if why in s] == [
        s for s in report.skipped if s.startswith("Bundle.entry[2].resource.requester: ")]
    assert len([s for s in report.skipped if why in s]) == 1


def test_an_unresolved_medication_makes_the_prescription_wrong() -> None:
    # Without the drug there is nothing to prescribe: a problem, not a note.
    doc = bundle(patient(), medication_request(
        medicationReference={"reference": "Medication?identifier=urn:drugs|X1"}))
    report = read_fhir(doc, institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.medication_unresolved", "Bundle.entry[1].resource.medicationReference")]
    assert [i["kind"] for i in report.items] == ["patient"]


def test_a_conditional_subject_resolves_in_the_bundle_or_names_the_patient() -> None:
    by_rid = {"reference": f"Patient?identifier={RESIDENT_ID_SYSTEM}|{RID}"}
    # In the bundle: the Patient's whole ref.
    report = read_fhir(bundle(patient(), observation(subject=by_rid)), institution=INSTITUTION)
    assert report.items[1]["payload"]["patient"] == {"resident_id": RID, "mrn": "MR000123"}
    # Alone: the identifier it names, which the exchange links by.
    obs = observation(subject=by_rid)
    del obs["encounter"]
    report = read_fhir(obs, institution=INSTITUTION)
    assert report.problems == []
    assert report.items[0]["payload"]["patient"] == {"resident_id": RID}


# The Synthea sample bundles (US synthetic patients; used as they are) ------------------------

SYNTHEA_KINDS = {  # what each file holds that the exchange maps, by kind
    "Ardith914": {"patient": 1, "encounter": 18, "immunization": 36, "document": 18},
    "Lemuel304": {"patient": 1, "encounter": 7, "immunization": 22, "document": 7},
    "hospitalInformation1631543164888": {}, "practitionerInformation1631543164888": {},
}
DIRECTORIES = [p for p in SYNTHEA_FILES if "Information" in p.name]


def test_the_synthea_samples_are_present() -> None:
    assert len(SYNTHEA_FILES) >= 4, f"expected the Synthea sample bundles under {SYNTHEA}"
    assert {p.name.split("_")[0].removesuffix(".json") for p in SYNTHEA_FILES} == \
        set(SYNTHEA_KINDS)


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda p: p.stem[:12])
def test_synthea_bundles_map_whole(path: Path) -> None:
    doc = json.loads(path.read_bytes())
    report = read_fhir(path.read_bytes(), institution=INSTITUTION)
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    kinds = Counter(i["kind"] for i in report.items)
    # Nothing refused; every item is one the gateway takes.
    assert report.problems == []
    assert dict(kinds) == SYNTHEA_KINDS[path.name.split("_")[0].removesuffix(".json")]
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []
    # Claims, ExplanationOfBenefit, Provenance, Organization, ...: each said to be not mapped.
    unmapped = [s for s in report.skipped if s.endswith("resource type not mapped")]
    assert len(unmapped) == sum(t not in MAPPED for t in types)
    if "Patient" in types:
        # No resident ID: the patient goes by the hospital's MRN (typed MR), and so does all.
        person = next(e["resource"] for e in doc["entry"]
                      if e["resource"]["resourceType"] == "Patient")
        assert {json.dumps(i["payload"]["patient"]) for i in report.items} == {
            json.dumps({"mrn": person["id"]})}
        # Times keep Synthea's offset.
        assert all(i["payload"]["start"].endswith("+00:00") for i in report.items
                   if i["kind"] == "encounter")
        # Each note is sent once: as the DocumentReference, not again as its DiagnosticReport.
        assert sum("presentedForm is sent as the DocumentReference" in s
                   for s in report.skipped) == types.count("DiagnosticReport")
        # Practitioners and Locations are conditional references to the other files: reported.
        unresolved = [s for s in report.skipped if "conditional reference" in s]
        assert unresolved and all("display text is used" in s for s in unresolved)


@pytest.mark.parametrize("path", [p for p in SYNTHEA_FILES if p not in DIRECTORIES],
                         ids=lambda p: p.stem[:12])
def test_synthea_references_resolve_against_the_directory_bundles(path: Path) -> None:
    alone = read_fhir(path.read_bytes(), institution=INSTITUTION)
    report = read_fhir(path.read_bytes(), institution=INSTITUTION,
                       directories=[p.read_bytes() for p in DIRECTORIES])
    assert report.problems == [] and len(report.items) == len(alone.items)
    assert not [s for s in report.skipped if "conditional reference" in s]
    # The attending now comes from the Practitioner resource itself (prefix, given, family).
    attending = {i["payload"].get("attending") for i in report.items if i["kind"] == "encounter"}
    assert attending and all(a and a.startswith("Dr. ") for a in attending)


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
    """Every place in a JSON tree, for the mutation tests below."""
    inner = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    return [at, *(p for key, child in inner for p in paths(child, (*at, key)))]


def mutated(doc: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return doc


VISIT_PATHS = paths(visit())[1:]
CHART_PATHS = paths(chart())[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VISIT_PATHS), json_values)
def test_a_visit_with_any_one_part_replaced_never_raises_and_items_stay_valid(
        where: tuple[Any, ...], value: Any) -> None:
    report = read_fhir(mutated(visit(), where, value), institution=INSTITUTION)
    assert_valid(report.items)
    assert len(report.items) <= 4
    assert_no_patient_data(report)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CHART_PATHS), json_values)
def test_a_chart_with_any_one_part_replaced_never_raises_and_items_stay_valid(
        where: tuple[Any, ...], value: Any) -> None:
    # Every new resource type, its references, contained resources and document content.
    report = read_fhir(mutated(chart(), where, value), institution=INSTITUTION,
                       institutions=REGISTERED)
    assert_valid(report.items)
    assert len(report.items) <= len(CHART_KINDS)
    assert_no_patient_data(report)
    assert all(DISCHARGE_SHA256 not in str(p) for p in report.problems)
