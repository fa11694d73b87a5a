"""The CSV adapter: a village clinic's exports, read by its mapping file, become canonical items.

The sample exports of 桃源村卫生室 (samples/csv/) are synthetic: resident IDs made by
make_resident_id (region 341122), made-up names.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.csv_export import MappingError, load_mapping, read_csv
from adapters.report import IngestReport, check_item
from domain.clinical import Item, parse_payload

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
MAPPING_TEXT = (SAMPLES / "taoyuan-vc.mapping.toml").read_text(encoding="utf-8")
MAPPING = load_mapping(MAPPING_TEXT)
INSTITUTION = "taoyuan-vc"
ICD10, LOINC, UCUM = (
    "http://hl7.org/fhir/sid/icd-10",
    "http://loinc.org",
    "http://unitsofmeasure.org",
)

EXPECTED = {  # what each sample export maps to, by kind
    "taoyuan-vc-residents.csv": {"patient": 20},
    "taoyuan-vc-visits.csv": {"encounter": 29, "condition": 29, "observation": 75},
    "taoyuan-vc-prescriptions.csv": {"medication_request": 28},
    "taoyuan-vc-labs.csv": {"observation": 40},
    "taoyuan-vc-immunizations.csv": {"immunization": 3},
}
VISITS = "taoyuan-vc-visits.csv"
ENCODING = {
    "taoyuan-vc-residents.csv": "utf-8-sig",
    VISITS: "gb18030",
    "taoyuan-vc-prescriptions.csv": "gb18030",
    "taoyuan-vc-labs.csv": "utf-8",
    "taoyuan-vc-immunizations.csv": "gb18030",
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def read(name: str, data: bytes | None = None, mapping: Any = MAPPING) -> IngestReport:
    return read_csv(
        sample(name) if data is None else data,
        mapping=mapping,
        institution=INSTITUTION,
        filename=name,
    )


def table(name: str) -> list[list[str]]:
    """A sample export as rows of cells (row 0 the header), to edit in a test."""
    return list(csv.reader(io.StringIO(sample(name).decode(ENCODING[name]), newline="")))


def encoded(rows: list[list[str]], encoding: str = "gb18030") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


def edited(name: str, changes: dict[tuple[int, str], str]) -> bytes:
    """The export with cells replaced: (spreadsheet row number, column name) → new text."""
    rows = table(name)
    for (n, column), value in changes.items():
        rows[n - 1][rows[0].index(column)] = value
    return encoded(rows, ENCODING[name])


def by_id(report: IngestReport) -> dict[str, dict[str, Any]]:
    return {i["source_id"]: i for i in report.items}


PERSONAL = {
    cell
    for name in EXPECTED
    for row in table(name)[1:]
    for cell in row
    if len(cell) == 18 and cell[:6] == "341122"
} | {row[1] for row in table("taoyuan-vc-residents.csv")[1:]}


def assert_no_patient_data(report: IngestReport) -> None:
    for problem in report.problems:
        assert not any(value in str(problem) for value in PERSONAL)


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


# The file as a whole: header, encoding, which mapping ---------------------------------------


def test_a_missing_column_refuses_the_file_in_one_problem_naming_it() -> None:
    rows = table(VISITS)
    rows[0][rows[0].index("收缩压")] = "高压"
    rows[0][rows[0].index("随访编号")] = "流水号"
    report = read(VISITS, encoded(rows))
    [problem] = report.problems
    assert (problem.code, problem.field) == ("csv.missing_columns", "header")
    assert "随访编号" in problem.message and "收缩压" in problem.message
    assert report.items == []


def test_the_mapping_encoding_decides_how_the_bytes_are_read() -> None:
    utf8 = MAPPING_TEXT.replace(
        'encoding = "gb18030"\nid = "随访编号"', 'encoding = "utf-8"\nid = "随访编号"'
    )
    assert utf8 != MAPPING_TEXT
    # The GB18030 export read as UTF-8: refused, naming the key to fix.
    report = read(VISITS, mapping=load_mapping(utf8))
    [problem] = report.problems
    assert problem.code == "csv.encoding" and "files.visits.encoding" in problem.message
    assert report.items == []
    # The same rows saved as UTF-8 with a BOM (as Excel does) read as UTF-8: the same items.
    with_bom = encoded(table(VISITS), "utf-8-sig")
    assert read(VISITS, with_bom, load_mapping(utf8)).items == read(VISITS).items
    # ... and read as GB18030 they are refused: the BOM says the mapping is wrong.
    [problem] = read(VISITS, with_bom).problems
    assert problem.code == "csv.encoding" and "utf-8-sig" in problem.message


def test_utf8_read_as_gb18030_does_not_pass_for_data() -> None:
    # UTF-8 without a BOM may decode as GB18030 into other characters: the header then names
    # none of the mapping's columns, and the problem points at the encoding.
    gb = MAPPING_TEXT.replace('encoding = "utf-8"\n', 'encoding = "gb18030"\n')
    report = read("taoyuan-vc-labs.csv", mapping=load_mapping(gb))
    assert report.items == []
    [problem] = report.problems
    assert problem.code in ("csv.encoding", "csv.missing_columns")
    assert "encoding" in problem.message


def test_the_file_name_picks_the_mapping_table() -> None:
    report = read_csv(
        sample(VISITS),
        mapping=MAPPING,
        institution=INSTITUTION,
        filename="C:\\导出\\taoyuan-vc-VISITS-202603.csv",
    )
    assert len(report.items) == sum(EXPECTED[VISITS].values())
    for filename in ("visits.xlsx", ""):
        report = read_csv(
            sample(VISITS), mapping=MAPPING, institution=INSTITUTION, filename=filename
        )
        assert [p.code for p in report.problems] == ["csv.no_mapping"] and not report.items


def test_another_institutions_mapping_is_refused() -> None:
    report = read_csv(sample(VISITS), mapping=MAPPING, institution="dongcheng-thc", filename=VISITS)
    assert [p.code for p in report.problems] == ["csv.institution"] and not report.items


MINI = """
institution = "taoyuan-vc"
timezone = "{tz}"
[files.f]
pattern = "*.tsv"
delimiter = "\\t"
id = ["日期", "序号"]
mrn = "门诊号"
[sections.v]
file = "f"
kind = "encounter"
start = "日期"
"""


@pytest.mark.parametrize(
    ("tz", "cell", "start"),
    [
        ("Asia/Shanghai", "2026-03-02 09:30", "2026-03-02T09:30:00+08:00"),
        ("Asia/Shanghai", "2026-03-02", "2026-03-02T00:00:00+08:00"),  # a date alone: midnight
        ("Asia/Urumqi", "2026-03-02 09:30", "2026-03-02T09:30:00+06:00"),
    ],
)
def test_times_without_an_offset_take_the_mapping_timezone(tz: str, cell: str, start: str) -> None:
    data = f"日期\t序号\t门诊号\n{cell}\t1\tMZ001\n".encode()
    report = read_csv(
        data, mapping=load_mapping(MINI.format(tz=tz)), institution=INSTITUTION, filename="a.tsv"
    )
    assert report.problems == []
    [item] = report.items
    assert item["payload"]["start"] == start
    # A tab-separated file, an id of two columns (one with a space, kept whole).
    assert item["source_id"] == f"v:{cell.replace(' ', '%20')}|1"


# The mapping file: each mistake named by its key -------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('value = "收缩压"', 'valeu = "收缩压"', "sections.sbp.valeu"),
        ('value = "收缩压"', 'valeu = "收缩压"', "sections.sbp.value"),
        ('encoding = "gb18030"', 'encoding = "big-5x"', "files.visits.encoding"),
        ('file = "labs"', 'file = "lab"', "sections.lab.file"),
        (
            'codes = "vitals"\nvalue = "舒张压"',
            'codes = "vital"\nvalue = "舒张压"',
            "sections.dbp.codes",
        ),
        ('kind = "immunization"', 'kind = "vaccine"', "sections.vaccination.kind"),
        ('timezone = "Asia/Shanghai"', 'timezone = "Beijing"', "timezone"),
        ('code = { value = "SBP" }', 'code = { value = "XX" }', "sections.sbp.code"),
        ('code = { value = "SBP" }', "code = 5", "sections.sbp.code"),
        ('GXY = { code = "I10"', 'GXY = { cod = "I10"', "codes.diagnosis.map.GXY.code"),
        (
            'encounter = "visit"\n\n[sections.dbp]',
            'encounter = "dx"\n\n[sections.dbp]',
            "sections.sbp.encounter",
        ),
        ("optional = true", 'optional = "yes"', "sections.fpg.optional"),
        (
            "[sections.resident]",
            '[files.extra]\npattern = "x*.csv"\nid = "a"\nmrn = "b"\n[sections.resident]',
            "files.extra",
        ),  # a file no section reads
        # A row id that is the resident ID would put the number into every source_id.
        ('id = "档案编号"\nresident_id', 'id = "身份证号"\nresident_id', "files.residents.id"),
    ],
)
def test_a_wrong_mapping_file_names_the_wrong_key(old: str, new: str, field: str) -> None:
    text = MAPPING_TEXT.replace(old, new, 1)
    assert text != MAPPING_TEXT
    with pytest.raises(MappingError) as caught:
        load_mapping(text)
    assert field in [p.field for p in caught.value.problems]
    assert field in str(caught.value)


def test_a_mapping_that_is_not_toml_says_where() -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping(MAPPING_TEXT.replace("[sections.dx]", "[sections.dx", 1))
    [problem] = caught.value.problems
    assert problem.code == "csv.mapping.toml" and "line" in problem.message


# Nothing an export can hold makes the adapter raise -------------------------------------------


def assert_valid(items: list[dict[str, Any]]) -> None:
    for item in items:
        Item.model_validate(item)
        parse_payload(item["kind"], item["payload"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(EXPECTED)))
def test_arbitrary_bytes_become_problems_not_exceptions(raw: bytes, name: str) -> None:
    report = read(name, raw)
    assert report.problems and report.items == []


VISIT_ROWS = table(VISITS)
cells = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # GB18030 writes all


@settings(max_examples=300, deadline=None)
@given(st.integers(1, len(VISIT_ROWS) - 1), st.integers(0, len(VISIT_ROWS[0]) - 1), cells)
def test_a_visit_export_with_any_one_cell_replaced_never_raises(
    row: int, column: int, text: str
) -> None:
    rows = [list(r) for r in VISIT_ROWS]
    rows[row][column] = text
    report = read(VISITS, encoded(rows))
    assert report.items or report.problems
    assert_valid(report.items)
    # At most the one row is lost; the others map as before.
    assert len(report.items) >= sum(EXPECTED[VISITS].values()) - 5
    assert_no_patient_data(report)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, max_size=12), max_size=6))
def test_arbitrary_cells_under_the_sample_header_never_raise(rows: list[list[str]]) -> None:
    report = read(VISITS, encoded([VISIT_ROWS[0], *rows]))
    assert_valid(report.items)
    assert_no_patient_data(report)
    assert report.items or report.problems or all(not "".join(r).strip() for r in rows)
