"""A Patient whose gender or birth date contradicts its resident ID is sent with a named
warning in the ingest report, whichever adapter read it (FHIR, HL7 v2, CSV); the Patient
resource the exchange renders carries the flag as a ``meta.tag``."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from adapters.fhir import read_fhir
from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport, item_warnings
from domain.resident_id import BIRTH_DATE_MISMATCH, SEX_MISMATCH
from projections.render import DATA_QUALITY_SYSTEM, render_patient
from tests.factories import patient_item, resident
from tests.unit import csv_samples, fhir_builders, hl7v2_messages


def codes(report: IngestReport) -> list[tuple[str, str, str]]:
    return [(w.code, w.field, w.source_id) for w in report.warnings]


def patient_source_id(report: IngestReport) -> str:
    (item,) = [i for i in report.items if i["kind"] == "patient"]
    return str(item["source_id"])


def assert_sent_with_no_problem(report: IngestReport) -> None:
    assert report.problems == []
    assert [i["kind"] for i in report.items].count("patient") == 1


def assert_names_no_value(report: IngestReport, *values: str) -> None:
    for warning in report.warnings:
        text = str(warning) + str(warning.as_dict())
        assert not any(v in text for v in values)


def test_fhir_a_patient_of_the_other_sex_is_sent_with_a_warning() -> None:
    # The resident ID's sequence code is even (female); the Patient says male.
    report = read_fhir(
        fhir_builders.bundle(fhir_builders.patient(gender="male"), fhir_builders.encounter()),
        institution=fhir_builders.INSTITUTION,
    )
    assert_sent_with_no_problem(report)
    sid = patient_source_id(report)
    assert codes(report) == [(SEX_MISMATCH.code, "payload.gender", sid)]
    assert_names_no_value(report, fhir_builders.RID, fhir_builders.NAME)
    # The Patient as the ID describes it: nothing to warn about.
    assert read_fhir(fhir_builders.visit(), institution=fhir_builders.INSTITUTION).warnings == []


def test_hl7v2_a_birth_date_apart_from_the_ids_is_sent_with_a_warning() -> None:
    rid = hl7v2_messages.RID
    pid = f"PID|1||{rid}^^^CHN^NNCHN~MR000123^^^DCTHC^MR||王^秀英||19560403|F"
    report = read_hl7v2(hl7v2_messages.admission(pid=pid), institution=hl7v2_messages.INSTITUTION)
    assert_sent_with_no_problem(report)
    sid = patient_source_id(report)
    assert codes(report) == [(BIRTH_DATE_MISMATCH.code, "payload.birth_date", sid)]
    assert_names_no_value(report, rid, "19560403", "1956-04-03", hl7v2_messages.NAME)
    agreeing = read_hl7v2(hl7v2_messages.admission(), institution=hl7v2_messages.INSTITUTION)
    assert agreeing.items and agreeing.warnings == []


def test_csv_a_resident_row_of_the_other_sex_and_birth_date_is_sent_with_both() -> None:
    name = "taoyuan-vc-residents.csv"
    # Row 2 is a woman (her ID's sequence code is even), born 1940/01/01.
    data = csv_samples.edited(name, {(2, "性别"): "男", (2, "出生日期"): "1941/01/01"})
    report = csv_samples.read(name, data)
    assert report.problems == []
    assert len(report.items) == csv_samples.EXPECTED[name]["patient"]
    (sid,) = {w.source_id for w in report.warnings}
    assert codes(report) == [
        (SEX_MISMATCH.code, "payload.gender", sid),
        (BIRTH_DATE_MISMATCH.code, "payload.birth_date", sid),
    ]
    assert sid in csv_samples.by_id(report)
    assert_names_no_value(report, *csv_samples.PERSONAL)
    # The samples as exported agree with their IDs.
    assert csv_samples.read(name).warnings == []


def test_only_patient_items_are_compared_and_warnings_leave_with_their_item() -> None:
    rid = resident(2)  # even sequence code: female
    wrong = patient_item(rid, "p-2", gender="male")
    other = {**wrong, "kind": "encounter"}  # not a Patient: nothing to compare
    assert [w.code for w in item_warnings(wrong)] == [SEX_MISMATCH.code]
    assert item_warnings(other) == []
    assert item_warnings(patient_item(rid, "p-2b")) == []
    report = IngestReport(items=[wrong])
    assert len(report.warnings) == 1
    report.items.clear()  # an item left out takes its warning with it
    assert report.warnings == []
    merged = IngestReport()
    merged.extend(IngestReport(items=[wrong]))
    assert [w.source_id for w in merged.warnings] == ["p-2"]


def test_the_rendered_patient_carries_its_flags_as_meta_tags() -> None:
    pid = uuid4()
    shown: dict[str, Any] = render_patient(
        pid,
        identifiers=[],
        demographics={"name": "王秀英", "gender": "male"},
        birth_date="1956-04-02",
        sex="female",
        quality_flags=(SEX_MISMATCH.code, "resident_id.retired_rule"),
    )
    assert shown["meta"]["tag"] == [
        {"system": DATA_QUALITY_SYSTEM, "code": SEX_MISMATCH.code, "display": SEX_MISMATCH.title},
        {"system": DATA_QUALITY_SYSTEM, "code": "resident_id.retired_rule"},
    ]
    plain = render_patient(pid, identifiers=[], demographics=None, birth_date=None, sex=None)
    assert "meta" not in plain
