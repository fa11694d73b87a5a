"""The HL7 v2 adapter never raises nor hangs: arbitrary bytes, HL7-like text and mutated
messages become items or problems, never an exception, and no problem carries patient data."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
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


# A call takes milliseconds: one that runs for seconds is a hang in the making.
WITHIN = timedelta(seconds=5)


@settings(max_examples=300, deadline=WITHIN)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_sound(read_hl7v2(raw, institution=INSTITUTION))


# Bytes made of what HL7 input is made of: headers naming character sets, MLLP bytes, marks
# of every Unicode form, separators, delimiters, escapes, and bytes of no character set.
pieces = st.sampled_from(
    [
        b"MSH|^~\\&|HIS|DCTHC|HIE|COUNTY|20260302091500||ADT^A04|C1|P|2.5|||||CHN|",
        b"MSH#$%@*#",
        b"GB 18030-2000",
        b"8859/1",
        b"UNICODE UTF-16",
        b"ISO IR87",
        b"PID|1||MR1^^^X^MR||\xcd\xf5^\xd0\xe3||19560402|F",
        b"PV1|1|O|||||||||||||||||||||||||||||||||||||||||||202603020910",
        b"OBX|1|ED|X^Y^L||^AP^PDF^Base64^JVBERi0=||||||F|||202603020930",
        b"\\X",
        b"\\.sp9\\",
        b"\x0b",
        b"\x1c\r",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\xfe\xff\x00M",
        b"\x00\x00",
        b"\r",
        b"\n",
        b"|",
        b"^",
        b"~",
        b"&",
        b"\x80",
        b"\xff",
        b"FHS|^~\\&\r",
        b"BTS|1\r",
    ]
)


@settings(max_examples=400, deadline=WITHIN)
@given(st.lists(pieces | st.binary(max_size=8), min_size=1, max_size=30).map(b"".join))
def test_hl7_shaped_bytes_never_raise(raw: bytes) -> None:
    report = read_hl7v2(raw, institution=INSTITUTION)
    assert_sound(report)
    assert_no_patient_data(report)


@pytest.mark.parametrize(
    "raw",
    [
        b"MSH|^~\\&|" + b"\\" * 400_000,  # escape characters without end
        b"MSH|^~\\&|" + b"\\.sp999999\\" * 20_000,  # formatting that repeats
        b"MSH|^~\\&|" + b"^~&" * 300_000,  # nothing but delimiters
        b"\x0b\x1c\r" * 300_000,  # empty MLLP frames
        b"\xff\xfeM\x00" + b"\x00" * 1_000_001,  # a UTF-16 mark and an odd length
        b"MSH|^~\\&|" + b"\r" * 1_000_000,  # empty segments
        b"MSH|^~\\&|\r" + b"Z\r" * 1_000_000,  # a million segments
    ],
    ids=["escapes", "formatting", "delimiters", "frames", "utf16", "empty", "segments"],
)
def test_large_adversarial_input_is_answered_quickly(raw: bytes) -> None:
    started = time.monotonic()
    report = read_hl7v2(raw, institution=INSTITUTION)
    assert time.monotonic() - started < WITHIN.total_seconds()
    assert_sound(report)


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
