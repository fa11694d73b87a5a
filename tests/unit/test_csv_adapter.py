"""The CSV adapter: a village clinic's exports, read by its mapping file, become canonical items.

The sample exports of 桃源村卫生室 (samples/csv/) are synthetic: resident IDs made by
make_resident_id (region 341122), made-up names.
"""

from __future__ import annotations

from collections import Counter

import pytest

from adapters.report import check_item
from tests.unit.csv_samples import (
    EXPECTED,
    ICD10,
    LOINC,
    PERSONAL,
    UCUM,
    VISITS,
    assert_no_patient_data,
    by_id,
    edited,
    encoded,
    read,
    table,
)

# The sample exports ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_sample_export_maps_completely(name: str) -> None:
    report = read(name)
    assert report.problems == [] and report.skipped == []
    assert dict(Counter(i["kind"] for i in report.items)) == EXPECTED[name]
    # Every item is one the gateway takes as it is.
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []


def test_source_ids_are_unique_across_the_exports_and_carry_no_personal_numbers() -> None:
    ids = [i["source_id"] for name in EXPECTED for i in read(name).items]
    assert len(ids) == len(set(ids)) == sum(sum(k.values()) for k in EXPECTED.values())
    assert not any(value in sid for sid in ids for value in PERSONAL)


def test_a_follow_up_visit_becomes_an_encounter_its_diagnosis_and_vital_signs() -> None:
    items = by_id(read(VISITS))
    # Row 2 of the GB18030 export: a hypertension follow-up, local code GXY, at 8:00 local time.
    visit = items["visit:SF20260302001"]["payload"]
    assert visit["start"] == "2026-03-02T08:00:00+08:00"
    assert (visit["encounter_class"], visit["status"], visit["department"]) == (
        "outpatient",
        "finished",
        "全科",
    )
    i10 = {"system": ICD10, "code": "I10", "display": "原发性高血压", "version": "国家临床版2.0"}
    assert visit["reason"] == [i10]
    assert visit["patient"] == {"resident_id": "341122194001010026", "mrn": "TY0001"}
    # The diagnosis is a condition of that visit, from the local code table.
    dx = items["dx:SF20260302001"]["payload"]
    assert dx["code"] == i10 and dx["encounter"] == "visit:SF20260302001"
    # The next row writes the diagnosis in words (高血压): the same ICD-10 code.
    assert items["dx:SF20260302002"]["payload"]["code"] == i10
    assert items["dx:SF20260302003"]["payload"]["code"]["code"] == "E11.9"
    # Blood pressure: LOINC with the UCUM unit the code table gives.
    sbp = items["sbp:SF20260302001"]["payload"]
    assert (sbp["code"]["system"], sbp["code"]["code"], sbp["category"]) == (
        LOINC,
        "8480-6",
        "vital-signs",
    )
    assert sbp["value_quantity"] == {
        "value": "128",
        "unit": "mm[Hg]",
        "system": UCUM,
        "code": "mm[Hg]",
    }
    assert sbp["effective"] == "2026-03-02T08:00:00+08:00"
    # The fingerstick glucose, with the reference range of the code table.
    fpg = items["fpg:SF20260302001"]["payload"]
    assert fpg["value_quantity"]["value"] == "6.1"
    assert (fpg["reference_range"]["low"]["value"], fpg["reference_range"]["high"]["value"]) == (
        "3.9",
        "6.1",
    )
    # A visit with no fingerstick (空腹血糖 blank) makes no glucose item, and no problem.
    assert "visit:SF20260302002" in items and "fpg:SF20260302002" not in items


def test_a_row_without_a_resident_id_goes_by_the_clinics_patient_number() -> None:
    items = by_id(read(VISITS))
    assert items["visit:SF20260304012"]["payload"]["patient"] == {"mrn": "TY0012"}
    # The infant registered before getting an ID card: a patient by 档案编号 alone.
    infant = by_id(read("taoyuan-vc-residents.csv"))["resident:TY0020"]["payload"]
    assert infant["patient"] == {"mrn": "TY0020"} and infant["birth_date"] == "2025-11-18"


def test_registrations_read_sex_words_and_gb_t_2261_codes() -> None:
    items = by_id(read("taoyuan-vc-residents.csv"))
    assert items["resident:TY0001"]["payload"] == {
        "patient": {"resident_id": "341122194001010026", "mrn": "TY0001"},
        "name": "王秀英",
        "gender": "female",
        "birth_date": "1940-01-01",
    }
    assert items["resident:TY0007"]["payload"]["gender"] == "female"  # written "2"
    assert items["resident:TY0002"]["payload"]["gender"] == "male"


def test_a_lab_result_keeps_its_ucum_unit_and_reference_range() -> None:
    items = by_id(read("taoyuan-vc-labs.csv"))
    crea = items["lab:JY2026030201|CREA"]["payload"]
    # The export writes μmol/L; [units] makes it UCUM umol/L, the unit the code table expects.
    unit = {"unit": "μmol/L", "system": UCUM, "code": "umol/L"}
    assert crea["code"] == {"system": LOINC, "code": "14682-9", "display": "血清肌酐"}
    assert crea["value_quantity"] == {"value": "58", **unit}
    assert crea["reference_range"] == {
        "low": {"value": "41", **unit},
        "high": {"value": "81", **unit},
    }
    assert crea["effective"] == "2026-03-02T07:30:00+08:00"
    assert crea["category"] == "laboratory"
    # A dipstick result in words keeps its words and its range as written.
    protein = items["lab:JY2026030201|NDB"]["payload"]
    assert protein["value_string"] == "+" and protein["reference_range"] == {"text": "阴性"}


def test_a_prescription_line_links_its_visit_and_carries_ucum_annotated_doses() -> None:
    items = by_id(read("taoyuan-vc-prescriptions.csv"))
    line = items["rx:CF20260302001|1"]["payload"]
    assert line["medication"] == {
        "system": "http://www.whocc.no/atc",
        "code": "C08CA05",
        "display": "硝苯地平缓释片",
    }
    assert line["dose"] == {"value": "1", "unit": "片", "system": UCUM, "code": "{tbl}"}
    assert (line["frequency"], line["duration_days"], line["status"]) == (
        "每日2次",
        30,
        "completed",
    )
    assert line["encounter"] == "visit:SF20260302001"
    assert line["authored"] == "2026-03-02T08:00:00+08:00"
    # Two drugs on one prescription: the id combines 处方号 and 序号.
    assert {"rx:CF20260303005|1", "rx:CF20260303005|2"} <= set(items)
    # A refill outside a follow-up has no visit number: it maps without the link.
    assert "encounter" not in items["rx:CF20260320901|1"]["payload"]


def test_immunizations_map_local_vaccine_codes_to_cvx() -> None:
    items = by_id(read("taoyuan-vc-immunizations.csv"))
    flu = items["vaccination:JZ2026030502"]["payload"]
    assert flu["vaccine"]["system"] == "http://hl7.org/fhir/sid/cvx"
    assert flu["vaccine"]["code"] == "141"
    assert (flu["lot_number"], flu["dose_number"]) == ("202509B12", 1)
    assert flu["occurrence"] == "2026-03-05T10:35:00+08:00"


# Resending: the same rows give the same source_ids ----------------------------------------


def test_a_re_export_gives_the_same_source_ids_whatever_the_row_order() -> None:
    first = [i["source_id"] for i in read(VISITS).items]
    assert [i["source_id"] for i in read(VISITS).items] == first
    # The clinic exports again, newest first: the same items, so the ledger keeps each once.
    rows = table(VISITS)
    again = read(VISITS, encoded([rows[0], *reversed(rows[1:])]))
    assert sorted(i["source_id"] for i in again.items) == sorted(first)
    assert by_id(again) == by_id(read(VISITS))


def test_a_row_exported_twice_in_one_file_is_sent_once() -> None:
    rows = table(VISITS)
    twice = read(VISITS, encoded([*rows, rows[1]]))
    assert twice.problems == [] and by_id(twice) == by_id(read(VISITS))
    assert twice.skipped == [f"row {len(rows) + 1}: the same as row 2 (sent once)"]
    # The same id with other content is a problem: which of the two is right is not known.
    changed = [*rows[1][:7], "999", *rows[1][8:]]
    report = read(VISITS, encoded([*rows, changed]))
    assert [(p.code, p.field) for p in report.problems] == [
        ("csv.duplicate_id", f"row {len(rows) + 1} column 随访编号")
    ]
    assert by_id(report) == by_id(read(VISITS))


# Bad rows: left out whole, named by row and column; the others still map --------------------


def test_bad_rows_are_refused_by_row_and_column_while_the_others_map() -> None:
    good = read(VISITS)
    rows = table(VISITS)
    data = edited(
        VISITS,
        {
            (2, "身份证号"): rows[1][3][:-1]
            + ("0" if rows[1][3][-1] != "0" else "1"),  # check digit
            (3, "随访日期"): "2026-13-45",
            (4, "诊断"): "ZZZ-未编码",
            (5, "收缩压"): "1三8",
            (6, "随访编号"): "",
        },
    )
    report = read(VISITS, data)
    assert [(p.code, p.field) for p in report.problems] == [
        ("resident_id.check_digit", "row 2 column 身份证号"),
        ("csv.datetime", "row 3 column 随访日期+随访时间"),
        ("csv.code_unknown", "row 4 column 诊断"),
        ("csv.number", "row 5 column 收缩压"),
        ("csv.no_id", "row 6 column 随访编号"),
    ]
    assert "[codes.diagnosis]" in report.problems[2].message
    # Each bad row is left out whole: its visit, diagnosis and vital signs.
    refused = {r[0] for r in rows[1:6]}
    assert by_id(report) == {
        sid: item for sid, item in by_id(good).items() if sid.split(":")[1] not in refused
    }
    # No problem repeats a cell: not the ID number, the date, the local code or the value.
    assert_no_patient_data(report)
    for value in ("2026-13-45", "ZZZ", "1三8", rows[1][3]):
        assert not any(value in str(p) for p in report.problems)


def test_a_required_cell_left_blank_is_a_problem_an_optional_one_is_not() -> None:
    report = read(VISITS, edited(VISITS, {(2, "收缩压"): "", (4, "空腹血糖"): ""}))
    assert [(p.code, p.field) for p in report.problems] == [("csv.empty", "row 2 column 收缩压")]
    assert "fpg:SF20260302003" not in by_id(report) and "sbp:SF20260302003" in by_id(report)


@pytest.mark.parametrize(
    ("cell", "code"),
    [
        ("mg/dL", "csv.unit_unknown"),  # not in [units]
        ("%", "csv.unit_mismatch"),  # in [units], but not the unit of creatinine
    ],
)
def test_a_unit_the_mapping_cannot_vouch_for_is_refused(cell: str, code: str) -> None:
    report = read("taoyuan-vc-labs.csv", edited("taoyuan-vc-labs.csv", {(4, "单位"): cell}))
    assert [(p.code, p.field) for p in report.problems] == [(code, "row 4 column 单位")]
    assert len(report.items) == 39


def test_a_row_with_too_few_cells_and_blank_lines_at_the_end() -> None:
    rows = table(VISITS)
    report = read(VISITS, encoded([rows[0], rows[1][:5], *rows[2:], [], [""] * 3]))
    assert [(p.code, p.field) for p in report.problems] == [("csv.row_width", "row 2")]
    assert len(report.items) == sum(EXPECTED[VISITS].values()) - 5
