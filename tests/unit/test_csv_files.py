"""The CSV adapter on a file as a whole (header, encoding, which mapping reads it) and on the
mapping file itself: each mistake is named by its key."""

from __future__ import annotations

import pytest

from adapters.csv_export import MappingError, load_mapping, read_csv
from tests.unit.csv_samples import (
    EXPECTED,
    INSTITUTION,
    MAPPING,
    MAPPING_TEXT,
    VISITS,
    encoded,
    read,
    sample,
    table,
)

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
