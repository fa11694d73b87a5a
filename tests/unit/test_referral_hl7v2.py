"""Referrals through the HL7 v2 adapter: REF^I12 and its cancellation REF^I14 → referral items,
and the ways a referral message is refused."""

from __future__ import annotations

import pytest

from adapters.hl7v2 import read_hl7v2
from tests.unit.referral_messages import (
    COUNTY,
    ICD10,
    NAME,
    RID,
    TOWNSHIP,
    referral_message,
    rf1,
    valid_items,
)


def test_a_referral_message_maps_to_a_referral_item() -> None:
    # A township centre refers a stroke patient up to the county hospital, which the
    # consortium's facility map names by its institution code.
    report = read_hl7v2(referral_message(), institution=TOWNSHIP, facilities={"县医院": COUNTY})
    assert report.problems == []
    kinds = valid_items(report)
    [referral] = kinds["referral"]
    assert referral["source_id"] == "ZZ20260302001"
    assert referral["payload"] == {
        "patient": {"resident_id": RID, "mrn": "MR000456"},
        "to_institution": COUNTY,
        "from_department": "全科",
        "to_department": "神经内科",
        "referring_doctor": "李建国",
        "urgency": "emergency",
        "reason": "疑似急性脑梗死，需上级医院进一步诊治 (referral type: 医学)",
        "impression": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
        "history": "高血压病史10年，规律服药",
        "treatment": "阿司匹林300mg嚼服 (2026-03-02)",
        # RF1-7 gives the time: read in Beijing time.
        "requested_at": "2026-03-02T10:10:00+08:00",
    }
    # The patient item comes with it, as with every message.
    assert [p["payload"]["name"] for p in kinds["patient"]] == [NAME]


def test_a_receiving_facility_that_is_no_institution_code_is_refused() -> None:
    report = read_hl7v2(referral_message(), institution=TOWNSHIP)
    [problem] = report.problems
    assert (problem.code, problem.field) == ("hl7.referral_institution", "MSH-6")
    assert "facilities" in problem.message and "县医院" not in problem.message
    # The referral is left out; the message's patient item still goes.
    assert set(valid_items(report)) == {"patient"}


def test_a_facility_map_to_something_not_a_code_fails_loudly() -> None:
    with pytest.raises(ValueError, match="institution codes"):
        read_hl7v2(referral_message(), institution=TOWNSHIP, facilities={"县医院": "县 医院"})


@pytest.mark.parametrize(
    "priority, urgency",
    [
        ("S^STAT^HL70280", "emergency"),
        ("STAT", "emergency"),
        ("A^ASAP^HL70280", "urgent"),
        ("R^Routine^HL70280", "routine"),
        ("", "routine"),
    ],
)
def test_the_referral_priority_is_the_urgency(priority: str, urgency: str) -> None:
    report = read_hl7v2(
        referral_message(rf1_segment=rf1(f2=priority)),
        institution=TOWNSHIP,
        facilities={"县医院": COUNTY},
    )
    assert valid_items(report)["referral"][0]["payload"]["urgency"] == urgency


@pytest.mark.parametrize(
    "rf1_segment, providers, code, where",
    [
        (rf1(f2="Z^紧急"), None, "hl7.referral_priority", "RF1-2"),  # never guessed as routine
        (rf1(f6=""), None, "hl7.required", "RF1-6"),
        (rf1(f3="", f14=""), None, "hl7.required", "RF1-14"),
        (rf1(f7="20260302XX"), None, "hl7.invalid_datetime", "RF1-7"),
        (rf1(), ("PRD|RT^接收医生^HL70286|王^志强",), "hl7.required", "PRD-2"),
    ],
)
def test_a_referral_that_cannot_be_mapped_is_refused_precisely(
    rf1_segment: str, providers: tuple[str, ...] | None, code: str, where: str
) -> None:
    # (the last: no referring provider, and no PV1-8 referring doctor to fall back on)
    message = referral_message(rf1_segment=rf1_segment, providers=providers)
    report = read_hl7v2(message, institution=TOWNSHIP, facilities={"县医院": COUNTY})
    assert "referral" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [(code, where)]


def test_the_referring_doctor_falls_back_to_pv1_8() -> None:
    # No PRD at all: the visit's referring doctor (PV1-8) is the one who refers.
    message = referral_message(providers=(), pv1="PV1|1|O|全科门诊|||||D021^赵^敏")
    report = read_hl7v2(message, institution=TOWNSHIP, facilities={"县医院": COUNTY})
    assert valid_items(report)["referral"][0]["payload"]["referring_doctor"] == "赵敏"


def test_a_cancellation_message_cancels_the_referral_it_names() -> None:
    report = read_hl7v2(referral_message("I14"), institution=TOWNSHIP)
    assert report.problems == []  # no receiving institution is needed to cancel
    [cancel] = valid_items(report)["referral_action"]
    assert cancel == {
        "source_id": "ZZ20260302001/cancel",
        "kind": "referral_action",
        "payload": {
            "patient": {"resident_id": RID, "mrn": "MR000456"},
            "referral": f"{TOWNSHIP}/ZZ20260302001",
            "action": "cancel",
            "at": "2026-03-02T10:15:00+08:00",
            "by": "李建国",
            "reason": "cancelled by the referring institution (REF^I14)",
            "notes": "高血压病史10年，规律服药",
        },
    }
