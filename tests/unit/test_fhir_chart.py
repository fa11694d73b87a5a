"""The FHIR R4 adapter on a whole chart: prescriptions, a dispense, a procedure, a vaccine, an
allergy, documents and reports, blood-pressure panels, and entered-in-error resources."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from adapters.fhir import read_fhir
from tests.unit.fhir_builders import (
    CHART_KINDS,
    DISCHARGE,
    DISCHARGE_SHA256,
    INSTITUTION,
    REGISTERED,
    RID,
    allergy,
    assert_valid,
    attachment,
    bundle,
    chart,
    condition,
    dispense,
    document,
    encounter,
    immunization,
    medication,
    medication_request,
    observation,
    patient,
    procedure,
    report_resource,
)


def test_a_chart_maps_every_clinical_resource_type() -> None:
    # 王秀英's visit: two prescriptions, the dispense, an ECG, a vaccine, an allergy, a summary.
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    assert report.problems == []
    assert [i["kind"] for i in report.items] == CHART_KINDS
    assert_valid(report.items)
    # The Medication and the Practitioner only resolve references: they are not sent.
    assert report.skipped == [
        "Bundle.entry[2] Medication: resource type not mapped",
        "Bundle.entry[10] Practitioner: resource type not mapped",
    ]
    # Every item names 王秀英 the way her Patient does.
    assert {json.dumps(i["payload"]["patient"]) for i in report.items} == {
        json.dumps({"resident_id": RID, "mrn": "MR000123"})
    }


def test_a_prescription_resolves_its_medication_and_its_prescriber_in_the_bundle() -> None:
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    rx, rx2, dispensed = (i["payload"] for i in report.items[2:5])
    # The drug comes from the Medication it refers to; its local code gets the centre's system.
    assert rx["medication"] == {
        "system": f"urn:county-hie:local:{INSTITUTION}",
        "code": "YP0317",
        "display": "硝苯地平缓释片",
    }
    assert (rx["status"], rx["intent"], rx["authored"]) == (
        "active",
        "order",
        "2026-03-02T09:28:00+08:00",
    )
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
    assert (dispensed["days_supply"], dispensed["handed_over"]) == (30, "2026-03-02T09:40:00+08:00")


def test_procedure_immunization_and_allergy_keep_their_codes() -> None:
    report = read_fhir(chart(), institution=INSTITUTION, institutions=REGISTERED)
    done, vaccine, allergic = (i["payload"] for i in report.items[5:8])
    # The ECG was done by the county hospital: a registered institution, named by its code.
    assert done["code"]["code"] == "29303009" and done["performer"] == "county-hospital"
    assert (done["performed"], done["encounter"]) == ("2026-03-02T09:15:00+08:00", "Encounter/e1")
    assert vaccine["vaccine"] == {
        "system": "http://hl7.org/fhir/sid/cvx",
        "code": "08",
        "display": "乙肝疫苗",
    }
    assert (vaccine["lot_number"], vaccine["dose_number"]) == ("B202601", 2)
    # 青霉素: a local code, the centre's system.
    assert allergic["substance"] == {
        "system": f"urn:county-hie:local:{INSTITUTION}",
        "code": "QMS",
        "display": "青霉素",
    }
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


@pytest.mark.parametrize(
    ("resource", "problem"),
    [
        # Only a link and FHIR's SHA-1: the exchange cannot name the document.
        (
            attachment(
                url="https://his.example/doc1.pdf",
                hash=base64.b64encode(hashlib.sha1(DISCHARGE).digest()).decode(),
                size=9,
            ),
            ("fhir.document_no_sha256", "content[0].attachment"),
        ),
        (
            attachment(url="https://his.example/doc1.pdf"),
            ("fhir.document_no_sha256", "content[0].attachment"),
        ),
        # A SHA-1 that is not that of the data.
        (
            attachment(
                data=base64.b64encode(DISCHARGE).decode(),
                hash=base64.b64encode(hashlib.sha1(b"other").digest()).decode(),
            ),
            ("fhir.attachment_hash", "content[0].attachment.hash"),
        ),
        (
            attachment(data=base64.b64encode(DISCHARGE).decode(), size=3),
            ("fhir.attachment_size", "content[0].attachment.size"),
        ),
        # A GB18030 text cannot keep its charset in the canonical content type.
        (
            document(
                content=[
                    {
                        "attachment": {
                            "contentType": "text/plain; charset=GB18030",
                            "data": base64.b64encode(DISCHARGE).decode(),
                        }
                    }
                ]
            ),
            ("fhir.content_type_parameter", "content[0].attachment.contentType"),
        ),
    ],
)
def test_a_document_whose_sha256_cannot_be_had_or_checked_is_refused(
    resource: dict[str, Any], problem: tuple[str, str]
) -> None:
    report = read_fhir(bundle(patient(), resource), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        (problem[0], f"Bundle.entry[1].resource.{problem[1]}")
    ]
    assert [i["kind"] for i in report.items] == ["patient"]


def test_a_document_kept_at_the_sender_goes_by_a_sha256_hash_and_size() -> None:
    sha256 = hashlib.sha256(DISCHARGE).digest()
    resource = attachment(
        url="https://his.example/doc1.pdf",
        hash=base64.b64encode(sha256).decode(),
        size=len(DISCHARGE),
    )
    report = read_fhir(bundle(patient(), resource), institution=INSTITUTION)
    assert report.problems == []
    doc = report.items[1]["payload"]
    assert (doc["sha256"], doc["size"], "data" in doc) == (DISCHARGE_SHA256, len(DISCHARGE), False)


def test_a_diagnostic_report_with_a_presented_form_is_a_document() -> None:
    report = read_fhir(bundle(patient(), report_resource()), institution=INSTITUTION)
    assert report.problems == []
    doc = report.items[1]
    assert (doc["kind"], doc["source_id"]) == ("document", "DiagnosticReport/rep1")
    assert doc["payload"]["title"] == "心电图报告"
    assert doc["payload"]["sha256"] == hashlib.sha256("窦性心律".encode()).hexdigest()
    # Without one, its results are its Observations: nothing more to send, and it says so.
    bare = read_fhir(
        bundle(
            patient(), report_resource(presentedForm=None, result=[{"reference": "Observation/o1"}])
        ),
        institution=INSTITUTION,
    )
    assert bare.problems == [] and len(bare.items) == 1
    assert bare.skipped == [
        "Bundle.entry[1].resource: no presentedForm: a report's results "
        "are sent as their Observations"
    ]


def test_blood_pressure_components_are_observations_of_their_own() -> None:
    # A panel with no value: systolic and diastolic are its components (as Synthea sends).
    def component(code: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {
                "value": value,
                "unit": "mm[Hg]",
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }

    panel = observation(
        id="bp",
        valueQuantity=None,
        referenceRange=None,
        interpretation=None,
        encounter=None,
        code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        component=[component("8480-6", 152), component("8462-4", 94)],
    )
    report = read_fhir(
        bundle(patient(), {k: v for k, v in panel.items() if v is not None}),
        institution=INSTITUTION,
    )
    assert report.problems == []
    systolic, diastolic = report.items[1:]
    assert (systolic["source_id"], diastolic["source_id"]) == (
        "Observation/bp#0",
        "Observation/bp#1",
    )
    assert systolic["payload"]["code"]["code"] == "8480-6"
    assert diastolic["payload"]["value_quantity"]["value"] == "94"
    # Each keeps the panel's time, status, category and patient.
    assert diastolic["payload"]["effective"] == "2026-03-02T09:20:00+08:00"
    assert diastolic["payload"]["category"] == "laboratory"
    assert report.skipped == [
        "Bundle.entry[1].resource: a panel with no value of its own: its "
        "2 component(s) are sent as observations of their own, source_id "
        "suffixed #0 to #1"
    ]
    # A result with a value of its own and components is sent whole as well.
    both = read_fhir(
        bundle(patient(), encounter(), observation(component=[component("8480-6", 152)])),
        institution=INSTITUTION,
    )
    assert [i["source_id"] for i in both.items[2:]] == ["Observation/o1", "Observation/o1#0"]


ERROR = {"status": "entered-in-error"}
ERROR_VERIFIED = {"verificationStatus": {"coding": [{"code": "entered-in-error"}]}}


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (encounter(**ERROR), "status"),
        (observation(**ERROR), "status"),
        (condition(**ERROR_VERIFIED), "verificationStatus"),
        (medication_request(**ERROR), "status"),
        (dispense(**ERROR), "status"),
        (procedure(**ERROR), "status"),
        (immunization(**ERROR), "status"),
        (allergy(**ERROR_VERIFIED), "verificationStatus"),
        (document(**ERROR), "status"),
        (report_resource(**ERROR), "status"),
    ],
    ids=lambda v: v["resourceType"] if isinstance(v, dict) else v,
)
def test_entered_in_error_is_refused_with_a_pointer_to_retract(
    resource: dict[str, Any], field: str
) -> None:
    report = read_fhir(bundle(patient(), medication(), resource), institution=INSTITUTION)
    [problem] = report.problems
    assert (problem.code, problem.field) == (
        "fhir.entered_in_error",
        f"Bundle.entry[2].resource.{field}",
    )
    assert "retract" in problem.message
    assert problem.source_id == f"{resource['resourceType']}/{resource['id']}"
    assert [i["kind"] for i in report.items] == ["patient"]
