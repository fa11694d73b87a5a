"""OBX results by value type (OBX-2): every type of HL7 table 0125 maps to an observation's
value, a document, or a named left-out; anything else is refused by name, and no value text
makes the adapter raise."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7v2 import read_hl7v2
from adapters.hl7v2_values import VALUE_TYPES
from adapters.report import check_item
from tests.unit.hl7v2_messages import (
    INSTITUTION,
    assert_no_patient_data,
    by_source,
    field_text,
    obx,
    result,
    value_types,
)

SID = "LIS-7781/OBX/1"
GLUCOSE_AFTER = obx(5, "NM", "7.2", unit="mmol/L", code="14771-0^空腹血糖^LN")

# One case per value type: OBX-2, OBX-5, OBX-6, and what the observation holds. -----------------
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("NM", "7.20", "mmol/L^mmol/L^UCUM", {"value_quantity": {"value": "7.20", "unit": "mmol/L"}}),
    ("NM", "1.1", "", {"value_quantity": {"value": "1.1"}}),  # an INR has no unit
    ("SN", "^182", "mg/dl", {"value_quantity": {"value": "182", "unit": "mg/dl"}}),
    ("SN", "<^5", "", {"value_string": "<5"}),
    ("SN", "^1^:^128", "", {"value_string": "1:128"}),
    ("CQ", "5^mg&毫克&UCUM", "", {"value_quantity": {"value": "5", "unit": "毫克", "code": "mg"}}),
    ("MO", "12.50^CNY", "", {"value_quantity": {"value": "12.50", "unit": "CNY", "code": "CNY"}}),
    ("CP", "12.5&CNY^UP", "", {"value_quantity": {"value": "12.5", "unit": "CNY"}}),
    ("NA", "1.2^3.4^5", "mm", {"value_string": "1.2, 3.4, 5 mm"}),
    ("CE", "POS^阳性^L", "", {"value_coding": {"code": "POS", "display": "阳性"}}),
    ("CWE", "260373001^Detected^SCT", "", {"value_coding": {"system": "http://snomed.info/sct"}}),
    ("CNE", "LA6576-8^Positive^LN", "", {"value_coding": {"system": "http://loinc.org"}}),
    ("CF", "A^<b>阳性</b>^L", "", {"value_coding": {"code": "A"}}),
    ("CE", "^阳性", "", {"value_string": "阳性"}),  # text without a code
    ("ST", "空腹采血", "", {"value_string": "空腹采血"}),
    ("ST", "血压^偏高", "", {"value_string": "血压^偏高"}),  # an unescaped ^ is text
    ("TX", "第一行~第二行", "", {"value_string": "第一行\n第二行"}),
    ("FT", "所见\\.br\\结论\\.sk2\\正常", "", {"value_string": "所见\n结论  正常"}),
    ("ID", "Y", "", {"value_string": "Y"}),
    ("IS", "A1", "", {"value_string": "A1"}),
    ("DT", "201608", "", {"value_string": "2016-08"}),
    ("TM", "0930+0800", "", {"value_string": "09:30+08:00"}),
    ("TS", "20160818103000", "", {"value_string": "2016-08-18T10:30:00+08:00"}),
    ("DTM", "20160818", "", {"value_string": "2016-08-18"}),
    ("DR", "20160818^20160820", "", {"value_string": "2016-08-18/2016-08-20"}),
    ("AD", "人民路1号^^桃源县^湖南省", "", {"value_string": "人民路1号, 桃源县, 湖南省"}),
    (
        "XAD",
        "1 Main St^^Ann Arbor^MI^48103",
        "",
        {"value_string": "1 Main St, Ann Arbor, MI, 48103"},
    ),
    ("PN", "张^三", "", {"value_string": "张三"}),
    ("XPN", "EVERYMAN^ADAM", "", {"value_string": "ADAM EVERYMAN"}),
    ("FN", "van Beethoven^van^Beethoven", "", {"value_string": "van Beethoven"}),
    ("CN", "D017^李^建国", "", {"value_string": "李建国"}),
    ("XCN", "D017^李^建国", "", {"value_string": "李建国"}),
    ("XON", "桃源县人民医院^L", "", {"value_string": "桃源县人民医院"}),
    ("TN", "0736-1234567", "", {"value_string": "0736-1234567"}),
    ("XTN", "^PRN^PH^^86^736^1234567", "", {"value_string": "+86 736 1234567"}),
    ("CX", "MR000123^^^DCTHC^MR", "", {"value_string": "MR000123"}),
    ("CK", "123^4", "", {"value_string": "123"}),
    ("EI", "ORD-1^HIS", "", {"value_string": "ORD-1 HIS"}),
    ("HD", "HIS^1.2.156^ISO", "", {"value_string": "HIS 1.2.156"}),
    (
        "RP",
        "http://pacs/view?a=1\\T\\b=2^PACS^IM^JPEG",
        "",
        {"value_string": "http://pacs/view?a=1&b=2 (PACS)"},
    ),
]


def _contains(payload: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(
        _contains(payload.get(k) or {}, v) if isinstance(v, dict) else payload.get(k) == v
        for k, v in expected.items()
    )


@pytest.mark.parametrize(("kind", "value", "unit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_value_type_maps_to_an_observation_value(
    kind: str, value: str, unit: str, expected: dict[str, Any]
) -> None:
    report = read_hl7v2(result(obx(1, kind, value, unit=unit)), institution=INSTITUTION)
    assert report.problems == []
    item = by_source(report)[SID]
    assert item["kind"] == "observation"
    assert _contains(item["payload"], expected), item["payload"]
    assert check_item(item, where="item", source_id=SID) == []


def test_every_value_type_has_a_case_or_is_a_document_or_left_out() -> None:
    # A type added to the table without a test here fails this one.
    assert {c[0] for c in CASES} | {"ED", "MA"} == set(VALUE_TYPES)


# Documents -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "content", "content_type"),
    [
        ("^application^pdf^Base64^JVBERi0xLjQK", b"%PDF-1.4\n", "application/pdf"),
        ("^IM^JPEG^Base64^/9j/4A==", b"\xff\xd8\xff\xe0", "image/jpeg"),
        ("^AP^Octet-stream^Hex^DEADBEEF", b"\xde\xad\xbe\xef", "application/octet-stream"),
        ("^TEXT^^A^出院小结", "出院小结".encode(), "text/plain"),
    ],
    ids=["pdf", "jpeg", "hex", "text"],
)
def test_encapsulated_data_is_a_document_under_the_results_record(
    value: str, content: bytes, content_type: str
) -> None:
    report = read_hl7v2(
        result(obx(1, "ED", value, code="11502-2^检验报告^LN")), institution=INSTITUTION
    )
    assert report.problems == []
    doc = by_source(report)[SID]
    # The same record an observation of this OBX would have: a later version supersedes it.
    assert (doc["kind"], doc["record"]) == ("document", "obs:P456/11502-2/-")
    payload = doc["payload"]
    assert payload["type"]["code"] == "11502-2" and payload["title"] == "检验报告"
    assert payload["content_type"] == content_type
    assert base64.b64decode(payload["data"]) == content
    assert payload["sha256"] == hashlib.sha256(content).hexdigest()
    assert payload["size"] == len(content)
    assert payload["created"] == "2026-03-02T09:30:00+08:00"
    assert check_item(doc, where="item", source_id=SID) == []


def test_text_longer_than_an_observation_holds_is_a_text_document() -> None:
    findings = "双肺纹理清晰，未见明显实质性病变。" * 40  # 680 characters
    report = read_hl7v2(result(obx(1, "TX", findings)), institution=INSTITUTION)
    doc = by_source(report)[SID]
    assert doc["kind"] == "document" and doc["payload"]["content_type"] == "text/plain"
    assert base64.b64decode(doc["payload"]["data"]).decode() == findings


def test_a_document_past_the_limit_is_sent_by_its_hash() -> None:
    content = bytes(range(256)) * 2100  # 537,600 bytes: 716,800 characters of Base64
    value = "^AP^Octet-stream^Base64^" + base64.b64encode(content).decode()
    report = read_hl7v2(result(obx(1, "ED", value)), institution=INSTITUTION)
    payload = by_source(report)[SID]["payload"]
    assert "data" not in payload
    assert (payload["sha256"], payload["size"]) == (hashlib.sha256(content).hexdigest(), 537_600)
    assert any(s.startswith("OBX[1]: the document is past") for s in report.skipped)


def test_consecutive_text_lines_of_one_result_are_one_text() -> None:
    # A report written line by line: the same OBX-3 and OBX-4, one line per OBX.
    lines = ["影像所见：", "双肺纹理清晰。", "", "诊断意见：未见异常。"]
    segments = [obx(n, "TX", line, code="18782-3^放射报告^LN") for n, line in enumerate(lines, 1)]
    report = read_hl7v2(result(*segments, GLUCOSE_AFTER), institution=INSTITUTION)
    assert report.problems == []
    results = [i for i in report.items if "/OBX/" in i["source_id"]]
    # One result for the four lines, and the glucose after them on its own.
    assert [i["source_id"] for i in results] == [SID, "LIS-7781/OBX/5"]
    assert results[0]["payload"]["value_string"] == "\n".join(lines)
    assert "OBX[1]: the 3 OBX after it" in report.skipped[-1]


# Left out, refused -----------------------------------------------------------------------------


def test_a_waveform_is_left_out_with_its_reason_not_refused() -> None:
    report = read_hl7v2(result(obx(1, "MA", "1^2~3^4"), GLUCOSE_AFTER), institution=INSTITUTION)
    assert report.problems == []
    assert SID not in by_source(report) and "LIS-7781/OBX/2" in by_source(report)
    assert "OBX[1]: left out: a multiplexed array (waveform samples)" in report.skipped[-1]


@pytest.mark.parametrize(
    ("kind", "value", "code", "field"),
    [
        ("ZZ", "5", "hl7.value_type", "OBX[1]-2"),
        ("", "5", "hl7.value_type", "OBX[1]-2"),
        ("NM", "七", "hl7.value_not_numeric", "OBX[1]-5"),
        ("NA", "1^x", "hl7.value_not_numeric", "OBX[1]-5"),
        ("NM", "1~2", "hl7.value_repeats", "OBX[1]-5"),
        ("DT", "20160230", "hl7.invalid_datetime", "OBX[1]-5"),
        ("TM", "2561", "hl7.invalid_time", "OBX[1]-5"),
        ("ED", "^AP^PDF^Base64^***", "hl7.encapsulated_data", "OBX[1]-5.5"),
        ("ED", "^AP^PDF^Base64", "hl7.required", "OBX[1]-5.5"),
    ],
    ids=lambda v: v if v.startswith("hl7.") else "",
)
def test_a_value_that_cannot_be_read_is_refused_by_name(
    kind: str, value: str, code: str, field: str
) -> None:
    report = read_hl7v2(result(obx(1, kind, value), GLUCOSE_AFTER), institution=INSTITUTION)
    assert [(p.code, p.field, p.source_id) for p in report.problems] == [(code, field, SID)]
    assert "LIS-7781/OBX/2" in by_source(report)  # the rest of the report still goes
    assert_no_patient_data(report)


# Whatever the value type and the value, no exception --------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(value_types, field_text), min_size=1, max_size=4))
def test_any_value_type_and_text_maps_is_left_out_or_is_refused(
    results: list[tuple[str, str]],
) -> None:
    segments = [
        obx(n, kind, text, code=f"T{n}^检验{n}^L") for n, (kind, text) in enumerate(results, 1)
    ]
    report = read_hl7v2(result(*segments), institution=INSTITUTION)
    sent = by_source(report)
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []
    for problem in report.problems:
        assert problem.code and problem.field
    # Each OBX is accounted for: sent, said to be left out, or refused with its source id.
    # (A value holding a | shifts the fields after it: that OBX may then say anything.)
    for n in range(1, len(results) + 1):
        sid = f"LIS-7781/OBX/{n}"
        assert (
            sid in sent
            or any(s.startswith(f"OBX[{n}]:") for s in report.skipped)
            or any(p.source_id == sid for p in report.problems)
            or "|" in results[n - 1][1]
        ), sid
