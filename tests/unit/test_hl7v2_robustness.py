"""The HL7 v2 adapter never raises: arbitrary bytes, HL7-like text and mutated messages become
items or problems, never an exception, and no problem carries patient data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport, check_item
from tests.unit.hl7v2_messages import (
    GLUCOSE,
    INSTITUTION,
    SAMPLE_FILES,
    admission,
    assert_no_patient_data,
    result,
)

# Nothing a sender can send makes the adapter raise ------------------------------------------


def assert_sound(report: IngestReport) -> None:
    assert report.items or report.problems
    for problem in report.problems:
        assert problem.code and problem.field
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_sound(read_hl7v2(raw, institution=INSTITUTION))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="MSH|^~\\&\r\nPIDOBXV1239-", max_size=200))
def test_arbitrary_hl7_like_text_never_raises(text: str) -> None:
    assert_sound(read_hl7v2(("MSH|^~\\&|" + text), institution=INSTITUTION))


CORPUS = [admission(), result(GLUCOSE)] + [p.read_bytes() for p in SAMPLE_FILES[::7]]
mutation = st.tuples(
    st.sampled_from(["delete", "duplicate", "garble", "separator"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=40),
    st.sampled_from(list(b"|^~\\&\r\n\x00\xff#MSH0")),
)


def mutate(data: bytes, edits: list[tuple[str, int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, at, size, byte in edits:
        at %= max(len(buf), 1)
        if op == "delete":
            del buf[at : at + size]
        elif op == "duplicate":
            buf[at:at] = buf[at : at + size]
        elif op == "garble":
            buf[at : at + size] = bytes([byte]) * len(buf[at : at + size])
        else:
            buf[at:at] = bytes([byte])
    return bytes(buf)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(CORPUS))), st.lists(mutation, min_size=1, max_size=5))
def test_mutated_messages_never_raise(which: int, edits: list[tuple[str, int, int, int]]) -> None:
    report = read_hl7v2(mutate(CORPUS[which], edits), institution=INSTITUTION)
    assert_sound(report)
    assert_no_patient_data(report)
