"""Referrals through the adapters: HL7 v2 REF^I12/I14 and FHIR ServiceRequest/Task → referral
items. Synthetic patients only; every item produced is checked against the canonical models."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.fhir import read_fhir
from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport
from domain.clinical import Item, parse_payload
from domain.identity import RESIDENT_ID_SYSTEM, mrn_system

TOWNSHIP = "dongcheng-thc"  # the referring township health centre (the signer)
COUNTY = "county-hosp"  # the county hospital it refers to
RID = "11010519491231002X"  # a valid GB 11643 number (synthetic)
NAME = "张桂兰"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
INSTITUTION_SYSTEM = "urn:county-hie:institution"
ACTION_SYSTEM = "urn:county-hie:referral-action"
OUTPUT_SYSTEM = "urn:county-hie:referral-output"


def valid_items(report: IngestReport) -> dict[str, list[dict[str, Any]]]:
    """The items by kind, each validated as the gateway validates it; no patient data in any
    problem."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in report.items:
        item = Item.model_validate(raw)
        parse_payload(item.kind, item.payload)
        out.setdefault(item.kind, []).append(raw)
    for problem in report.problems:
        assert RID not in str(problem) and NAME not in str(problem)
    return out


# HL7 v2 -----------------------------------------------------------------------------------------


def rf1(**fields: str) -> str:
    values = {
        2: "S^STAT^HL70280",
        3: "MED^医学^HL70281",
        6: "ZZ20260302001^HIS",
        7: "202603021010",
        14: "疑似急性脑梗死，需上级医院进一步诊治",
    }
    values.update({int(k[1:]): v for k, v in fields.items()})
    return "RF1|" + "|".join(values.get(n, "") for n in range(1, max(values) + 1))


def referral_message(
    event: str = "I12",
    facility: str = "县医院^^L",
    rf1_segment: str = "",
    providers: tuple[str, ...] | None = None,
    pv1: str = "PV1|1|O|全科门诊||||||||||||||||V2026030200088",
) -> bytes:
    if providers is None:
        providers = (
            "PRD|RP^转出医生^HL70286|李^建国||全科^^^东城卫生院",
            "PRD|RT^接收医生^HL70286|王^志强||神经内科^^^县医院",
        )
    return "\r".join(
        [
            (
                f"MSH|^~\\&|HIS|DCTHC|HIE|{facility}|20260302101500||REF^{event}^REF_I12|"
                f"REF-20260302-{event}|P|2.5.1|||||CHN||UNICODE UTF-8"
            ),
            rf1_segment or rf1(),
            *providers,
            f"PID|1||{RID}^^^CHN^NNCHN~MR000456^^^DCTHC^MR||张^桂兰||19491231|F",
            "DG1|1||I63.9^脑梗死^I10|脑梗死|202603021000|W",
            "PR1|1||^^|阿司匹林300mg嚼服|202603021005",
            "OBR|1|P77^HIS||HBA1C^糖化血红蛋白^L",
            "NTE|||标本溶血",  # a note on a result: not the referral's history
            pv1,
            "NTE|||高血压病史10年，规律服药",
        ]
    ).encode()


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


# FHIR R4 ----------------------------------------------------------------------------------------


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": RESIDENT_ID_SYSTEM, "value": RID},
            {"system": mrn_system(TOWNSHIP), "value": "MR000456"},
        ],
        "name": [{"family": "张", "given": ["桂兰"]}],
        "gender": "female",
    }


def service_request(**changes: Any) -> dict[str, Any]:
    request = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "category": [
            {"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}
        ],
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "Practitioner/dr1"},
        "performer": [
            {"type": "Organization", "identifier": {"system": INSTITUTION_SYSTEM, "value": COUNTY}}
        ],
        "reasonCode": [
            {
                "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
                "text": "疑似急性脑梗死",
            }
        ],
        "locationCode": [{"text": "神经内科"}],
        "authoredOn": "2026-03-02T10:10:00+08:00",
        "note": [{"text": "高血压病史10年"}],
        **changes,
    }
    return {k: v for k, v in request.items() if v is not None}  # None: left out


def task(**changes: Any) -> dict[str, Any]:
    step = {
        "resourceType": "Task",
        "id": "t1",
        "status": "accepted",
        "intent": "order",
        "focus": {"reference": "ServiceRequest/sr1"},
        "for": {"reference": "Patient/p1"},
        "owner": {"display": "王志强"},
        "lastModified": "2026-03-02T11:00:00+08:00",
        **changes,
    }
    return {k: v for k, v in step.items() if v is not None}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    doctor = {
        "resourceType": "Practitioner",
        "id": "dr1",
        "name": [{"family": "李", "given": ["建国"]}],
    }
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (patient(), doctor, *resources)],
    }


def referral_of(report: IngestReport) -> dict[str, Any]:
    assert report.problems == []
    [item] = valid_items(report)["referral"]
    return item


def test_a_referral_service_request_maps_to_a_referral_item() -> None:
    # The township centre's system sends the referral as a ServiceRequest coded as one.
    item = referral_of(read_fhir(bundle(service_request()), institution=TOWNSHIP))
    assert item["source_id"] == "ServiceRequest/sr1"
    assert item["payload"] == {
        "patient": {"resident_id": RID, "mrn": "MR000456"},
        "to_institution": COUNTY,
        "to_department": "神经内科",
        "referring_doctor": "李建国",
        "urgency": "urgent",
        "reason": "疑似急性脑梗死",
        "impression": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
        "history": "高血压病史10年",
        "requested_at": "2026-03-02T10:10:00+08:00",
    }


@pytest.mark.parametrize(
    "priority, urgency",
    [("routine", "routine"), ("urgent", "urgent"), ("asap", "urgent"), ("stat", "emergency")],
)
def test_the_request_priority_is_the_urgency(priority: str, urgency: str) -> None:
    item = referral_of(read_fhir(bundle(service_request(priority=priority)), institution=TOWNSHIP))
    assert item["payload"]["urgency"] == urgency


def test_an_order_to_an_organization_is_a_referral_and_a_condition_its_impression() -> None:
    # No referral code: an order whose performer is the county hospital's Organization
    # (registered with the exchange by its own identifier), for the reason a Condition gives.
    hospital = {
        "resourceType": "Organization",
        "id": "o1",
        "identifier": [{"system": "urn:oid:1.2.156.1", "value": "45600001"}],
    }
    stroke = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]},
    }
    request = service_request(
        category=None,
        reasonCode=None,
        priority=None,
        performer=[{"reference": "Organization/o1"}],
        reasonReference=[{"reference": "Condition/c1"}],
    )
    report = read_fhir(
        bundle(hospital, stroke, request),
        institution=TOWNSHIP,
        institutions={"urn:oid:1.2.156.1|45600001": COUNTY},
    )
    item = referral_of(report)
    assert (item["payload"]["to_institution"], item["payload"]["urgency"]) == (COUNTY, "routine")
    assert item["payload"]["reason"] == "脑梗死"
    assert item["payload"]["impression"] == [
        {"system": ICD10, "code": "I63.9", "display": "脑梗死"}
    ]


def test_a_service_request_that_is_no_referral_is_reported_not_mapped() -> None:
    lab = service_request(
        category=[{"coding": [{"system": SNOMED, "code": "108252007"}]}], performer=None
    )
    report = read_fhir(bundle(lab), institution=TOWNSHIP)
    assert report.problems == [] and "referral" not in valid_items(report)
    assert any("not a referral" in s for s in report.skipped)


@pytest.mark.parametrize(
    "changes, code, where",
    [
        (
            {"performer": [{"reference": "Organization/elsewhere"}]},
            "fhir.referral_institution",
            "performer",
        ),
        ({"status": "revoked"}, "fhir.referral_status", "status"),
        ({"priority": "紧急"}, "fhir.referral_priority", "priority"),
        ({"requester": None}, "fhir.required", "requester"),
        ({"reasonCode": None}, "fhir.required", "reasonCode"),
        ({"authoredOn": "2026-03-02"}, "fhir.datetime_no_timezone", "authoredOn"),
    ],
)
def test_a_referral_that_cannot_be_mapped_is_refused_with_its_path(
    changes: dict[str, Any], code: str, where: str
) -> None:
    report = read_fhir(bundle(service_request(**changes)), institution=TOWNSHIP)
    assert "referral" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        (code, f"Bundle.entry[2].resource.{where}")
    ]


def action_of(report: IngestReport) -> dict[str, Any]:
    assert report.problems == []
    [item] = valid_items(report)["referral_action"]
    return dict(item["payload"])


@pytest.mark.parametrize(
    "status, action", [("accepted", "accept"), ("in-progress", "arrive"), ("completed", "complete")]
)
def test_a_task_status_is_the_step_the_receiver_takes(status: str, action: str) -> None:
    # The county hospital answers a referral the township centre sent before.
    step = task(
        status=status, requester={"identifier": {"system": INSTITUTION_SYSTEM, "value": TOWNSHIP}}
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload == {
        "patient": {"resident_id": RID},
        "action": action,
        "referral": f"{TOWNSHIP}/ServiceRequest/sr1",
        "at": "2026-03-02T11:00:00+08:00",
        "by": "王志强",
    }


def test_a_rejection_and_a_cancellation_carry_their_status_reason() -> None:
    reason = {"text": "本院无床位"}
    rejected = action_of(
        read_fhir(bundle(task(status="rejected", statusReason=reason)), institution=COUNTY)
    )
    assert (rejected["action"], rejected["reason"]) == ("reject", "本院无床位")
    # The sender cancels its own referral, sent in the same document.
    cancelled = action_of(
        read_fhir(
            bundle(
                service_request(),
                task(
                    status="cancelled",
                    statusReason={"text": "患者拒绝转诊"},
                    requester={"reference": "Practitioner/dr1"},
                ),
            ),
            institution=TOWNSHIP,
        )
    )
    assert cancelled["referral"] == f"{TOWNSHIP}/ServiceRequest/sr1"
    assert (cancelled["action"], cancelled["reason"], cancelled["by"]) == (
        "cancel",
        "患者拒绝转诊",
        "李建国",
    )


@pytest.mark.parametrize("status", ["rejected", "cancelled"])
def test_a_rejection_or_cancellation_without_a_reason_is_refused(status: str) -> None:
    report = read_fhir(bundle(task(status=status)), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.required", "Bundle.entry[2].resource.statusReason")
    ]


def back_referral(*outputs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return task(
        status="completed",
        code={"coding": [{"system": ACTION_SYSTEM, "code": "back_refer"}]},
        output=[
            {"type": {"coding": [{"system": OUTPUT_SYSTEM, "code": kind}]}, **value}
            for kind, value in outputs
        ],
        note=[{"text": "出院带药：阿司匹林100mg qd"}],
    )


def test_a_back_referral_carries_diagnosis_results_treatment_and_plan() -> None:
    # The county hospital sends the patient back down with what it found and did.
    step = back_referral(
        (
            "diagnosis",
            {
                "valueCodeableConcept": {
                    "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]
                }
            },
        ),
        ("results", {"valueString": "头颅CT：左侧基底节区低密度影"}),
        ("treatment", {"valueString": "溶栓后抗血小板治疗"}),
        ("follow-up-plan", {"valueString": "两周内社区随访血压"}),
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload["action"] == "back_refer"
    assert payload["diagnosis"] == [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]
    assert (payload["results"], payload["treatment"], payload["follow_up_plan"]) == (
        "头颅CT：左侧基底节区低密度影",
        "溶栓后抗血小板治疗",
        "两周内社区随访血压",
    )
    assert payload["notes"] == "出院带药：阿司匹林100mg qd"


def test_a_back_referral_diagnosis_may_be_a_condition_of_the_document() -> None:
    stroke = {
        "resourceType": "Condition",
        "id": "c9",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": ICD10, "code": "I63.4", "display": "脑栓塞"}]},
    }
    step = back_referral(
        ("diagnosis", {"valueReference": {"reference": "Condition/c9"}}),
        ("follow-up-plan", {"valueString": "两周内社区随访"}),
    )
    report = read_fhir(bundle(stroke, step), institution=COUNTY)
    assert report.problems == []
    [item] = valid_items(report)["referral_action"]
    assert item["payload"]["diagnosis"] == [{"system": ICD10, "code": "I63.4", "display": "脑栓塞"}]


def test_a_back_referral_without_its_plan_is_refused() -> None:
    step = back_referral(
        ("diagnosis", {"valueCodeableConcept": {"coding": [{"system": ICD10, "code": "I63.9"}]}})
    )
    report = read_fhir(bundle(step), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [p.code for p in report.problems] == ["fhir.referral_back_referral"]


def test_a_follow_up_is_a_completed_task_the_sender_sends() -> None:
    step = task(
        status="completed",
        businessStatus={"coding": [{"system": ACTION_SYSTEM, "code": "follow_up"}]},
        requester={"reference": "Practitioner/dr1"},
    )
    payload = action_of(read_fhir(bundle(step), institution=TOWNSHIP))
    assert (payload["action"], payload["by"]) == ("follow_up", "李建国")
    # The same code on a Task still in progress is refused: a follow-up is done when sent.
    early = read_fhir(bundle({**step, "status": "in-progress"}), institution=TOWNSHIP)
    assert [p.code for p in early.problems] == ["fhir.referral_task_status"]


def test_an_acceptance_may_give_the_appointment_and_department_as_outputs() -> None:
    # Outputs typed by text (no code) are read too; the step's code agrees with its status.
    step = task(
        code={"coding": [{"system": ACTION_SYSTEM, "code": "accept"}]},
        output=[
            {"type": {"text": "appointment"}, "valueDateTime": "2026-03-03T08:30:00+08:00"},
            {"type": {"text": "department"}, "valueString": "神经内科二病区"},
        ],
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert (payload["action"], payload["appointment"], payload["department"]) == (
        "accept",
        "2026-03-03T08:30:00+08:00",
        "神经内科二病区",
    )


@pytest.mark.parametrize("code", ["reject", "expire"])
def test_an_action_code_that_contradicts_the_status_is_refused(code: str) -> None:
    step = task(code={"coding": [{"system": ACTION_SYSTEM, "code": code}]})
    report = read_fhir(bundle(step), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.referral_action", "Bundle.entry[2].resource.code")
    ]


def test_a_task_may_name_its_referral_by_the_exchange_reference() -> None:
    step = task(
        focus={
            "identifier": {
                "system": "urn:county-hie:referral",
                "value": f"{TOWNSHIP}/ZZ20260302001",
            }
        }
    )
    payload = action_of(read_fhir(bundle(step), institution=COUNTY))
    assert payload["referral"] == f"{TOWNSHIP}/ZZ20260302001"


@pytest.mark.parametrize(
    "changes, said",
    [
        ({"status": "requested"}, "not a step of the referral yet"),
        ({"focus": {"reference": "Patient/p1"}}, "focus is not a ServiceRequest"),
        ({"focus": None}, "focus is not a ServiceRequest"),
    ],
)
def test_a_task_that_is_no_referral_step_is_reported_not_mapped(
    changes: dict[str, Any], said: str
) -> None:
    report = read_fhir(bundle(task(**changes)), institution=COUNTY)
    assert report.problems == [] and "referral_action" not in valid_items(report)
    assert any(said in s for s in report.skipped)


@pytest.mark.parametrize(
    "changes, code, where",
    [
        ({"status": "on-hold"}, "fhir.referral_task_status", "status"),
        ({"lastModified": None}, "fhir.required", "lastModified"),
        (
            {
                "focus": {
                    "type": "ServiceRequest",
                    "identifier": {"system": "urn:oid:1.2.3", "value": "R-1"},
                }
            },
            "fhir.referral_unresolved",
            "focus",
        ),
        (
            {"focus": {"identifier": {"system": "urn:county-hie:referral", "value": "无效"}}},
            "fhir.referral_reference",
            "focus.identifier",
        ),
        ({"for": None, "focus": {"reference": "ServiceRequest/sr9"}}, "fhir.required", "for"),
    ],
)
def test_a_task_that_cannot_be_mapped_is_refused_with_its_path(
    changes: dict[str, Any], code: str, where: str
) -> None:
    report = read_fhir(bundle(task(**changes)), institution=COUNTY)
    assert "referral_action" not in valid_items(report)
    assert [(p.code, p.field) for p in report.problems] == [
        (code, f"Bundle.entry[2].resource.{where}")
    ]
