"""What HL7 v2 input looks like on the wire, read as it is: character sets (MSH-18, or found
from the bytes), MLLP frames and several messages in one stream, a sender's own delimiters
(MSH-1, MSH-2) and escape sequences."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport
from tests.unit.hl7v2_messages import (
    INSTITUTION,
    NAME,
    admission,
    assert_no_patient_data,
    by_kind,
    by_source,
    names,
    obx,
    result,
)

KINDS = ["patient", "encounter", "condition", "allergy"]


def text(charset: str = "UNICODE UTF-8", **fields: str) -> str:
    """The township centre's admission as text, MSH-18 as given."""
    return admission(charset=charset, **fields).decode().removeprefix("\ufeff")


def patient_name(report: IngestReport) -> str:
    [patient] = by_kind(report)["patient"]
    return str(patient["payload"]["name"])


# Character sets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("GB 18030-2000", "gb18030"),  # HL7 table 0211's name
        ("GBK", "gbk"),
        ("GB2312", "gb2312"),
        ("CP936", "gbk"),  # a Windows code page
        ("UNICODE UTF-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ("", "gbk"),  # a HIS export that does not say
        ("", "gb18030"),
        ("", "utf-8"),
    ],
)
def test_a_chinese_message_is_read_in_the_character_set_it_is_written_in(
    declared: str, codec: str
) -> None:
    report = read_hl7v2(text(declared).encode(codec), institution=INSTITUTION)
    assert report.problems == []
    assert [i["kind"] for i in report.items] == KINDS
    assert patient_name(report) == NAME
    assert by_kind(report)["encounter"][0]["payload"]["department"] == "心内科"


def latin(charset: str) -> str:
    """The admission with its Chinese text in Latin letters, for the European character sets."""
    plain = re.sub(r"[\u4e00-\u9fff]+", "x", text(charset))
    return plain.replace("|x^x||", "|Müller^Jürgen||", 1)


@pytest.mark.parametrize(
    ("declared", "codec"), [("8859/1", "latin-1"), ("8859/15", "iso8859-15"), ("CP1252", "cp1252")]
)
def test_a_european_character_set_named_in_msh_18_is_honoured(declared: str, codec: str) -> None:
    report = read_hl7v2(latin(declared).encode(codec), institution=INSTITUTION)
    assert report.problems == []
    assert patient_name(report) == "Jürgen Müller"


def test_a_message_saying_utf8_but_written_in_gbk_is_read_with_a_note() -> None:
    # A HIS template says UTF-8; the system writes GBK. Strict UTF-8 decoding proves it wrong.
    report = read_hl7v2(text("UNICODE UTF-8").encode("gbk"), institution=INSTITUTION)
    assert report.problems == [] and patient_name(report) == NAME
    assert "MSH-18: names UTF-8, which the message is not; read as GB18030" in report.skipped


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # Bytes no character set read here accepts, whatever MSH-18 says or does not say.
        (text("").encode("gbk").replace("王".encode("gbk"), b"\xff"), "hl7.encoding"),
        (text("GB 18030-2000").encode("gb18030").replace(b"DCTHC", b"\x81\x20"), "hl7.encoding"),
        # A character set the adapter does not read, with bytes outside ASCII.
        (text("ISO IR87").encode("utf-8"), "hl7.charset_unknown"),
    ],
    ids=["undeclared", "declared", "unknown"],
)
def test_bytes_that_cannot_be_read_are_refused_naming_msh_18(data: bytes, code: str) -> None:
    report = read_hl7v2(data, institution=INSTITUTION)
    assert report.items == []
    assert [(p.code, p.field) for p in report.problems] == [(code, "MSH-18")]
    assert_no_patient_data(report)


def test_an_unknown_character_set_does_not_matter_for_ascii() -> None:
    ascii_only = re.sub(r"[^\x00-\x7f]+", "x", text("ISO IR87"))
    report = read_hl7v2(ascii_only.encode(), institution=INSTITUTION)
    assert report.problems == [] and patient_name(report) == "x x"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_are_recognised_by_their_mark_or_their_zero_bytes(codec: str) -> None:
    report = read_hl7v2(text("UNICODE UTF-16").encode(codec), institution=INSTITUTION)
    assert report.problems == [] and patient_name(report) == NAME


@settings(max_examples=200, deadline=None)
@given(names)
def test_valid_utf8_is_always_read_as_utf8(name: str) -> None:
    # No MSH-18: UTF-8 is tried first and strictly, so its text is never mis-read as GB 18030.
    pid = f"PID|1||MR000123^^^DCTHC^MR||{name}||19560402|F"
    report = read_hl7v2(text("", pid=pid).encode("utf-8"), institution=INSTITUTION)
    assert patient_name(report) == name


@settings(max_examples=200, deadline=None)
@given(names)
def test_gbk_that_is_not_utf8_is_read_as_gb18030(name: str) -> None:
    pid = f"PID|1||MR000123^^^DCTHC^MR||{name}||19560402|F"
    data = text("", pid=pid).encode("gbk")
    report = read_hl7v2(data, institution=INSTITUTION)
    assert patient_name(report) == name  # the fixed text of the message is never valid UTF-8


# Framing: MLLP, several messages, batches ---------------------------------------------------------


def second(control: str = "MSG-2") -> bytes:
    return admission(control=control).replace("王".encode(), "李".encode())


@pytest.mark.parametrize(
    "stream",
    [
        # MLLP: 0x0B, the message, 0x1C 0x0D; several frames one after another.
        b"\x0b" + admission() + b"\x1c\r" + b"\x0b" + second() + b"\x1c\r",
        # Frames with CRLF between segments, and line breaks between frames.
        b"\x0b" + admission().replace(b"\n", b"\r\n") + b"\x1c\r\n\r\n\x0b" + second() + b"\x1c\r",
        # Files concatenated: each message with its own byte-order mark.
        admission() + b"\n" + second(),
        # A batch file.
        b"FHS|^~\\&|HIS\rBHS|^~\\&|HIS\r" + admission() + b"\r" + second() + b"\rBTS|2\rFTS|1",
    ],
    ids=["mllp", "mllp-crlf", "concatenated", "batch"],
)
def test_every_message_of_a_stream_is_read(stream: bytes) -> None:
    report = read_hl7v2(stream, institution=INSTITUTION)
    assert report.problems == []
    assert [i["payload"]["name"] for i in by_kind(report)["patient"]] == [NAME, "李秀英"]
    assert {i["source_id"].split("/")[0] for i in report.items} == {"MSG-20260302-0001", "MSG-2"}


def test_each_message_of_a_stream_is_decoded_on_its_own() -> None:
    # One system writes GB 18030, the next UTF-8: each message is read in its own.
    stream = (
        b"\x0b"
        + text("GB 18030-2000").encode("gb18030")
        + b"\x1c\r\x0b"
        + second().removeprefix(b"\xef\xbb\xbf")
        + b"\x1c\r"
    )
    report = read_hl7v2(stream, institution=INSTITUTION)
    assert [i["payload"]["name"] for i in by_kind(report)["patient"]] == [NAME, "李秀英"]


def test_segments_outside_any_message_are_said_and_the_messages_still_read() -> None:
    stream = b"FHS|^~\\&|HIS\rBHS|^~\\&|HIS\rNTE|1||stray\r" + admission()
    report = read_hl7v2(stream, institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [("hl7.structure", "MSH")]
    assert [i["kind"] for i in report.items] == KINDS


def test_a_problem_in_a_later_message_names_which() -> None:
    bad = second().replace("李".encode(), b"\xff")  # not UTF-8, nor GB 18030
    report = read_hl7v2(admission() + b"\n" + bad, institution=INSTITUTION)
    [problem] = report.problems
    assert problem.code == "hl7.encoding" and problem.message.startswith("message 2: ")
    assert [i["kind"] for i in report.items] == KINDS


# Delimiters and escape sequences ---------------------------------------------------------------


def own_delimiters(message: str, chars: str = "#$%@*") -> str:
    """``message`` with the field, component, repetition, escape and subcomponent delimiters
    ``chars`` instead of |^~\\&."""
    table = str.maketrans("|^~\\&", chars)
    return message.translate(table)


@pytest.mark.parametrize("chars", ["#$%@*", "!:;?/", "|^~\\&"])
def test_a_senders_own_delimiters_read_as_the_standard_ones(chars: str) -> None:
    standard = read_hl7v2(text().encode(), institution=INSTITUTION)
    own = read_hl7v2(own_delimiters(text(), chars).encode(), institution=INSTITUTION)
    assert own.problems == []
    assert own.items == standard.items


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\", "A|B^C&D~E\\"),
        ("第一行\\.br\\第二行", "第一行\n第二行"),
        ("\\H\\重要\\N\\", "重要"),
        ("\\XE78E8B\\秀英", "王秀英"),  # hex: UTF-8 bytes in a UTF-8 message
        ("100\\X25\\", "100%"),
        ("a\\XZZ\\b", "a\\XZZ\\b"),  # not hex: kept as written
        ("C:\\temp", "C:\\temp"),  # left open: kept as written
        ("\\Zabc\\x", "\\Zabc\\x"),  # a sender's own sequence: kept as written
        ("a\\.sk999999\\b", "a" + " " * 100 + "b"),  # a count cannot blow a value up
    ],
    ids=["delimiters", "br", "highlight", "hex-utf8", "hex", "bad-hex", "open", "z", "count"],
)
def test_escape_sequences_are_read_with_the_messages_delimiters(value: str, expected: str) -> None:
    report = read_hl7v2(result(obx(1, "ST", value)), institution=INSTITUTION)
    assert by_source(report)["LIS-7781/OBX/1"]["payload"]["value_string"] == expected


def test_escapes_follow_a_senders_own_delimiters_and_character_set() -> None:
    # \F\ is the sender's field delimiter (#); hex is bytes in the message's set (GB 18030).
    segments = result(obx(1, "ST", "a@F@b@XCDF5@")).decode().removeprefix("\ufeff")
    own = own_delimiters(segments.replace("2.5.1", "2.5.1||||||GB 18030-2000", 1))
    report = read_hl7v2(own.encode("gb18030"), institution=INSTITUTION)
    assert report.problems == []
    assert by_source(report)["LIS-7781/OBX/1"]["payload"]["value_string"] == "a#b王"
