"""The HL7 v2 adapter: what it maps, what it refuses (with which problem), what it skips."""

from __future__ import annotations

import pytest

from adapters.hl7v2 import read_hl7v2
from adapters.report import check_item
from tests.unit.hl7v2_messages import (
    GLUCOSE,
    ICD10,
    INSTITUTION,
    NAME,
    RID,
    admission,
    assert_no_patient_data,
    by_kind,
    message,
    pv1,
    result,
)

# A Chinese township centre's messages, mapped whole ------------------------------------------


def test_an_admission_maps_patient_encounter_diagnosis_and_allergy() -> None:
    # A township centre admits 王秀英 with hypertension; its HIS writes LF and a BOM.
    report = read_hl7v2(admission(), institution=INSTITUTION)
    assert report.problems == []
    kinds = by_kind(report)
    assert [i["kind"] for i in report.items] == ["patient", "encounter", "condition", "allergy"]
    ref = {"resident_id": RID, "mrn": "MR000123"}

    # The patient: resident ID from PID-3 (type NNCHN), the MRN, the CJK name without a space.
    [pat] = kinds["patient"]
    assert pat == {
        "source_id": "MSG-20260302-0001/PID/1",
        "kind": "patient",
        "payload": {"patient": ref, "name": NAME, "gender": "female", "birth_date": "1956-04-02"},
    }

    # The encounter: an inpatient in progress since the admit time, read in Beijing time.
    [enc] = kinds["encounter"]
    assert enc["record"] == "enc:V2026030200017"
    assert enc["payload"] == {
        "patient": ref,
        "encounter_class": "inpatient",
        "status": "in-progress",
        "start": "2026-03-02T09:10:00+08:00",
        "department": "心内科",
        "admit_source": "1",
        "attending": "李建国",
    }

    # The diagnosis keeps ICD-10 with its version, and links to the visit's record.
    [dx] = kinds["condition"]
    assert dx["payload"]["code"] == {
        "system": ICD10,
        "code": "I10",
        "display": "原发性高血压",
        "version": "2019",
    }
    assert dx["payload"]["encounter"] == "enc:V2026030200017"
    assert dx["payload"]["recorded"] == "2026-03-02T09:30:00+08:00"
    assert dx["record"] == "dx:V2026030200017/F/I10"

    # The allergy: a drug, severe, a local code of this institution.
    [alg] = kinds["allergy"]
    assert alg["payload"]["substance"]["system"] == f"urn:county-hie:local:{INSTITUTION}"
    assert (alg["payload"]["category"], alg["payload"]["criticality"]) == ("medication", "high")

    # Next of kin, insurance and the event segment are not held: said once, not as problems.
    assert report.skipped == [
        "ADT^A01 EVN: segment not mapped",
        "ADT^A01 NK1: segment not mapped",
        "ADT^A01 IN1: segment not mapped",
    ]
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []


def test_a_discharge_is_a_new_version_of_the_admission() -> None:
    admitted = read_hl7v2(admission(), institution=INSTITUTION)
    discharged = read_hl7v2(
        admission(
            "A03",
            control="MSG-20260309-0044",
            pv1=(
                "PV1|1|I|心内科||||||||||||||||V2026030200017|||||||||||||||||01||||||||"
                "20260302091000|20260309100000"
            ),
        ),
        institution=INSTITUTION,
    )
    assert discharged.problems == []
    [before] = by_kind(admitted)["encounter"]
    [after] = by_kind(discharged)["encounter"]
    # Same record, a different source id: the discharge supersedes the admission.
    assert after["record"] == before["record"] and after["source_id"] != before["source_id"]
    assert after["payload"]["status"] == "finished"
    assert after["payload"]["end"] == "2026-03-09T10:00:00+08:00"
    assert after["payload"]["discharge_disposition"] == "01"


def test_a_lab_report_maps_results_with_units_ranges_and_interpretation() -> None:
    report = read_hl7v2(
        result(GLUCOSE, "OBX|2|ST|8251-1^备注^LN||空腹采血||||||F|||20260302093000"),
        institution=INSTITUTION,
    )
    assert report.problems == []
    report_obs, glucose, note = report.items[1:]
    # The OBR is the order's record, now final; each OBX its own record under the order.
    assert (report_obs["record"], report_obs["payload"]["status"]) == ("ord:P456", "final")
    assert glucose["source_id"] == "LIS-7781/OBX/1"
    assert glucose["record"] == "obs:P456/14771-0/-"
    payload = glucose["payload"]
    unit = {"unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert payload["value_quantity"] == {"value": "7.20", **unit}
    assert payload["reference_range"] == {
        "low": {"value": "3.9", **unit},
        "high": {"value": "6.1", **unit},
    }
    assert payload["interpretation"]["code"] == "H"
    assert payload["effective"] == "2026-03-02T09:30:00+08:00"
    assert payload["encounter"] == "enc:V2026030200017"
    # A resident ID typed ID by an authority 身份证 is recognised as one.
    assert payload["patient"] == {"resident_id": RID, "mrn": "MR000123"}
    assert note["payload"]["value_string"] == "空腹采血"


def test_a_corrected_result_amends_and_a_deleted_one_is_retracted() -> None:
    corrected = read_hl7v2(
        result(GLUCOSE.replace("|F|||2026", "|C|||2026")), institution=INSTITUTION
    )
    [fixed] = [i for i in corrected.items if i["source_id"].endswith("/OBX/1")]
    assert fixed["amends"] == "obs:P456/14771-0/-" and "record" not in fixed
    assert fixed["payload"]["status"] == "corrected"
    deleted = read_hl7v2(result(GLUCOSE.replace("|F|||2026", "|D|||2026")), institution=INSTITUTION)
    [gone] = [i for i in deleted.items if i["kind"] == "retract"]
    assert gone["payload"]["record"] == "obs:P456/14771-0/-"


@pytest.mark.parametrize(
    ("obx", "code", "field"),
    [
        (
            "OBX|1|NM|14771-0^空腹血糖^LN||7.2|mmol/L|||||F|||20260230093000",
            "hl7.invalid_datetime",
            "OBX[1]-14",
        ),
        (
            "OBX|1|NM|14771-0^空腹血糖^LN||高|mmol/L|||||F|||20260302093000",
            "hl7.value_not_numeric",
            "OBX[1]-5",
        ),
        (
            "OBX|1|NM|14771-0^空腹血糖^LN||7.2|mmol/L|||||Q|||20260302093000",
            "hl7.result_status",
            "OBX[1]-11",
        ),
        (
            "OBX|1|QQ|11502-2^报告^LN||^TEXT^^Base64^AAAA||||||F|||20260302093000",
            "hl7.value_type",
            "OBX[1]-2",
        ),
        ("OBX|1|NM|||7.2|mmol/L|||||F|||20260302093000", "hl7.required", "OBX[1]-3"),
    ],
    ids=lambda v: v if v.startswith("hl7.") else "",
)
def test_a_result_that_cannot_be_mapped_is_refused_alone(obx: str, code: str, field: str) -> None:
    report = read_hl7v2(result(obx), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [(code, field)]
    assert report.problems[0].source_id == "LIS-7781/OBX/1"
    # The patient and the report still go.
    assert [i["kind"] for i in report.items] == ["patient", "observation"]
    assert_no_patient_data(report)


def test_an_order_is_a_registered_observation_that_its_result_supersedes() -> None:
    order = read_hl7v2(
        message(
            "MSH|^~\\&|HIS|DCTHC|LIS|DCTHC|20260302083000||OML^O21^OML_O21|HIS-5501|P|2.5.1",
            "PID|1||MR000123^^^DCTHC^MR||王^秀英||19560402|F",
            "ORC|NW|P456^HIS||||||||20260302083000",
            "OBR|1|P456^HIS||24331-1^血脂四项^LN|||20260302090000",
        ),
        institution=INSTITUTION,
    )
    assert order.problems == []
    ordered = order.items[1]
    assert (
        ordered["payload"]["status"] == "registered" and "value_quantity" not in ordered["payload"]
    )
    [reported] = [
        i
        for i in read_hl7v2(result(GLUCOSE), institution=INSTITUTION).items
        if i["source_id"].endswith("/OBR/1")
    ]
    assert ordered["record"] == reported["record"] == "ord:P456"


def test_a_prescription_and_an_immunization() -> None:
    rx = read_hl7v2(
        message(
            "MSH|^~\\&|HIS|DCTHC|HIE|COUNTY|20260302094000||RDE^O11^RDE_O11|HIS-5502|P|2.5",
            "PID|1||MR000123^^^DCTHC^MR||王^秀英||19560402|F",
            "ORC|NW|RX2026-88^HIS|||||||20260302093500|||D017^李^建国",
            "RXE|^QD|86900381000121^氨氯地平片^NMPN|5||mg^mg^UCUM||^每日一次，口服|||28|片",
            "RXR|PO^口服^HL70162",
            "TQ1|1||QD",
        ),
        institution=INSTITUTION,
    )
    assert rx.problems == []
    req = rx.items[1]
    assert (req["kind"], req["record"]) == ("medication_request", "rx:RX2026-88")
    assert req["payload"]["dose"] == {
        "value": "5",
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    assert req["payload"]["route"]["code"] == "PO" and req["payload"]["frequency"] == "QD"
    assert req["payload"]["quantity"]["value"] == "28" and req["payload"]["requester"] == "李建国"

    vxu = read_hl7v2(
        message(
            "MSH|^~\\&|EPI|DCTHC|HIE|COUNTY|20260302100000||VXU^V04^VXU_V04|EPI-901|P|2.5.1",
            "PID|1||MR000123^^^DCTHC^MR||王^秀英||19560402|F",
            "ORC|RE||IMM-33",
            "RXA|0|1|20260302||88^流感疫苗^CVX|0.5|mL^mL^UCUM||00||||||L2026A|20270101|"
            "SINOVAC^科兴^MVX|||CP|A",
            "RXR|IM^肌内注射^HL70162|LA^左上臂^HL70163",
        ),
        institution=INSTITUTION,
    )
    assert vxu.problems == []
    imm = vxu.items[1]["payload"]
    assert imm["vaccine"]["system"] == "http://hl7.org/fhir/sid/cvx"
    # RXA-3 gives the day: the day it stays (a FHIR date), not an invented midnight.
    assert (imm["occurrence"], imm["lot_number"]) == ("2026-03-02", "L2026A")
    assert imm["route"]["code"] == "IM" and imm["site"]["code"] == "LA"


def test_a_batch_holds_several_messages_each_mapped_on_its_own() -> None:
    # A batch file with CRLF, made of two message files (each with its own BOM).
    crlf = b"\r\n".join(
        [b"FHS|^~\\&|HIS", b"BHS|^~\\&|HIS", admission(), result(GLUCOSE), b"BTS|2", b"FTS|1"]
    )
    report = read_hl7v2(crlf, institution=INSTITUTION)
    assert report.problems == []
    # Or just consecutive messages; the same control id twice is refused the second time.
    twice = read_hl7v2(admission() + b"\n" + admission(), institution=INSTITUTION)
    assert [(p.code, p.field) for p in twice.problems] == [("hl7.duplicate_control_id", "MSH-10")]
    assert len(twice.items) == 4
    assert {i["source_id"].split("/")[0] for i in report.items} == {"MSG-20260302-0001", "LIS-7781"}


# Refusals: precise, and never the value -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"", "hl7.not_hl7", "MSH"),
        (b'{"resourceType": "Patient"}', "hl7.not_hl7", "MSH"),
        (admission().replace("王".encode(), b"\xff"), "hl7.encoding", "MSH-18"),
        (admission().replace(b"^~\\&", b"^^^^"), "hl7.encoding_characters", "MSH-2"),
        (
            admission().replace(b"ADT^A01^ADT_A01", b"SIU^S12^SIU_S12"),
            "hl7.unsupported_type",
            "MSH-9",
        ),
        (admission(version="2.2"), "hl7.unsupported_version", "MSH-12"),
        (admission(control=""), "hl7.control_id", "MSH-10"),
        (admission(pid="PID|1||||王^秀英||19560402|F"), "hl7.no_patient_identifier", "PID-3"),
        (
            admission(pid=f"PID|1||{RID[:-1]}0^^^CHN^NNCHN||王^秀英"),
            "resident_id.check_digit",
            "PID-3",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v and "|" not in v else "",
)
def test_a_message_that_cannot_be_read_is_refused_with_a_precise_reason(
    data: bytes, code: str, field: str
) -> None:
    report = read_hl7v2(data, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [(code, field)]
    assert_no_patient_data(report)


def test_an_unsupported_type_is_named() -> None:
    report = read_hl7v2(
        admission().replace(b"ADT^A01^ADT_A01", b"SIU^S12^SIU_S12"), institution=INSTITUTION
    )
    assert report.problems[0].message.startswith("SIU^S12 is not mapped")


@pytest.mark.parametrize(
    ("event", "visit", "code", "field"),
    [
        ("A01", pv1("B", "V1", "20260302091000"), "hl7.encounter_class", "PV1-2"),
        # No visit number, and an admit time to the day only: no record can be derived.
        ("A01", pv1("I", "", "20260302"), "hl7.no_visit_number", "PV1-19"),
        ("A01", pv1("I", "V1", "2026023009"), "hl7.invalid_datetime", "PV1-44"),
        # A discharge without an admit time: its event's own time is not the visit's start.
        ("A03", pv1("I", "V1", "", "20260309100000"), "hl7.required", "PV1-44"),
    ],
    ids=lambda v: v if v.startswith("hl7.") else "",
)
def test_an_encounter_that_cannot_be_mapped_leaves_the_rest(
    event: str, visit: str, code: str, field: str
) -> None:
    report = read_hl7v2(admission(event, pv1=visit), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [(code, field)]
    assert "encounter" not in by_kind(report) and "patient" in by_kind(report)


def test_times_without_an_offset_take_the_given_zone_and_an_offset_wins() -> None:
    utc = read_hl7v2(admission(), institution=INSTITUTION, tz="UTC")
    assert by_kind(utc)["encounter"][0]["payload"]["start"] == "2026-03-02T09:10:00+00:00"
    given = admission(pv1="PV1|1|I|||||||||||||||||V1|||||||||||||||||||||||||20260302091000-0500")
    assert (
        by_kind(read_hl7v2(given, institution=INSTITUTION))["encounter"][0]["payload"]["start"]
        == "2026-03-02T09:10:00-05:00"
    )
