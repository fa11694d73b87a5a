"""Referral messages the referral adapter tests share: HL7 v2 REF^I12/I14 messages and FHIR R4
ServiceRequest/Task resources, and the items they map to, each validated against the canonical
models. Synthetic patients only; not collected as tests."""

from __future__ import annotations

from typing import Any

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


def action_of(report: IngestReport) -> dict[str, Any]:
    assert report.problems == []
    [item] = valid_items(report)["referral_action"]
    return dict(item["payload"])


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
