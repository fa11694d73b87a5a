"""The referral views without servers: the policy file and its durations, who a referral step
is told to and what the notification says, and the ServiceRequest/Task/inbox rows built from
the projection's rows (validated as FHIR R4B). Synthetic data only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from domain.referral import STATES, ReferralPolicy, referral_id
from exchange.errors import ConfigurationError
from exchange.ingest.notifier import message, recipients
from exchange.api.referral_fhir import (
    SERVICE_REQUEST_STATUS,
    TASK_STATUS,
    box_row,
    service_request,
    task,
)
from exchange.settings import load_policy, load_settings, parse_duration

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 10, 15, tzinfo=CST)  # when the exchange received the request
TOWNSHIP = "dongcheng-thc"  # the referring township health centre
COUNTY = "county-hosp"  # the county hospital it refers to
REFERENCE = f"{TOWNSHIP}/ZZ20260302001"
RID = referral_id(REFERENCE)
PATIENT = UUID("6f1c2d3e-0000-4000-8000-00000000a001")  # a made-up regional patient id
ICD10 = "http://hl7.org/fhir/sid/icd-10"
REASON = "疑似急性脑梗死，需上级医院进一步诊治"
CONTENT: dict[str, Any] = {
    "to_institution": COUNTY, "to_department": "神经内科", "referring_doctor": "李建国",
    "urgency": "urgent", "reason": REASON,
    "impression": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
    "history": "高血压病史十年", "treatment": "已予阿司匹林口服",
    "requested_at": "2026-03-02T10:10:00+08:00"}
BACK_REFERRAL: dict[str, Any] = {
    "referral": REFERENCE, "action": "back_refer", "at": "2026-03-09T16:00:00+08:00",
    "by": "王志强", "diagnosis": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}],
    "results": "头颅MRI示左侧基底节区急性梗死灶", "treatment": "溶栓后康复治疗",
    "follow_up_plan": "两周内社区随访血压，继续抗血小板治疗"}
POLICY = "policy.toml"
# The value sets of FHIR R4's required bindings, which the fhir.resources models do not check.
REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                  "unknown"}
REQUEST_INTENT = {"proposal", "plan", "directive", "order", "original-order", "reflex-order",
                  "filler-order", "instance-order", "option"}
REQUEST_PRIORITY = {"routine", "urgent", "asap", "stat"}
TASK_STATUS_CODES = {"draft", "requested", "received", "accepted", "rejected", "ready",
                     "cancelled", "in-progress", "on-hold", "failed", "completed",
                     "entered-in-error"}
TASK_INTENT = {"unknown", "proposal", "plan", "order", "original-order", "reflex-order",
               "filler-order", "instance-order", "option"}


# The policy file -------------------------------------------------------------------------------

def write_policy(directory: Path, text: str) -> Path:
    path = directory / POLICY
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_defaults_when_the_file_does_not_exist(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / POLICY)
    assert policy == ReferralPolicy()
    assert policy.accept_within == {"emergency": timedelta(hours=2),
                                    "urgent": timedelta(hours=24), "routine": timedelta(hours=72)}
    assert policy.arrive_within == timedelta(days=7)
    assert policy.follow_up_within == timedelta(days=14)
    assert policy.care_after_completion == timedelta(days=30)


def test_a_full_policy_file_sets_every_deadline(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, """
[referral]
accept_within = { emergency = "30m", urgent = "12h", routine = "2d" }
arrive_within = "5d"
follow_up_within = "10d"
care_after_completion = "60d"
"""))
    assert policy.accept_within == {"emergency": timedelta(minutes=30),
                                    "urgent": timedelta(hours=12), "routine": timedelta(days=2)}
    assert policy.arrive_within == timedelta(days=5)
    assert policy.follow_up_within == timedelta(days=10)
    assert policy.care_after_completion == timedelta(days=60)


def test_a_partial_policy_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, """
[referral]
accept_within = { emergency = "1h" }
follow_up_within = "7d"
"""))
    defaults = ReferralPolicy()
    assert policy.accept_within == {**defaults.accept_within, "emergency": timedelta(hours=1)}
    assert policy.follow_up_within == timedelta(days=7)
    assert policy.arrive_within == defaults.arrive_within
    assert policy.care_after_completion == defaults.care_after_completion


def test_a_file_without_a_referral_section_gives_the_defaults(tmp_path: Path) -> None:
    assert load_policy(write_policy(tmp_path, '[other]\nx = "1"\n')) == ReferralPolicy()


@pytest.mark.parametrize(("raw", "expected"), [
    ("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)),
    ("14d", timedelta(days=14)), ("1.5h", timedelta(minutes=90)), (" 3d ", timedelta(days=3))])
def test_durations_parse(raw: str, expected: timedelta) -> None:
    assert parse_duration(raw, "[referral] arrive_within") == expected


@pytest.mark.parametrize("raw", ["0h", "0.0d", "-2h", "2", "2w", "2H", "h", "", 14, 1.5, True,
                                 None, ["2h"]])
def test_bad_durations_are_refused_naming_where(raw: object) -> None:
    with pytest.raises(ConfigurationError, match=r"\[referral\] arrive_within must be a positive"):
        parse_duration(raw, "[referral] arrive_within")


@pytest.mark.parametrize("value", ['"0h"', '"-2h"', '"2"', '"2w"', "14", "true", '["2h"]'])
@pytest.mark.parametrize("key", ["arrive_within", "follow_up_within", "care_after_completion"])
def test_a_bad_deadline_in_the_file_names_its_key(tmp_path: Path, key: str, value: str) -> None:
    path = write_policy(tmp_path, f"[referral]\n{key} = {value}\n")
    with pytest.raises(ConfigurationError, match=rf"\[referral\] {key} must be a positive"):
        load_policy(path)


def test_a_bad_acceptance_deadline_names_its_urgency(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral]\naccept_within = { urgent = "0h" }\n')
    with pytest.raises(ConfigurationError, match=r"accept_within\.urgent"):
        load_policy(path)


def test_unknown_keys_in_the_referral_section_are_refused_by_name(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral]\narrive_within = "7d"\naccept_whithin = "2h"\n')
    with pytest.raises(ConfigurationError, match="unknown keys: \\['accept_whithin'\\]"):
        load_policy(path)


@pytest.mark.parametrize("value", ['{ stat = "1h" }', '{ routine = "72h", elective = "7d" }',
                                   '"2h"'])
def test_accept_within_takes_only_the_known_urgencies(tmp_path: Path, value: str) -> None:
    path = write_policy(tmp_path, f"[referral]\naccept_within = {value}\n")
    with pytest.raises(ConfigurationError,
                       match="accept_within maps emergency, urgent, routine to durations"):
        load_policy(path)


def test_invalid_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral\narrive_within = "7d"\n')
    with pytest.raises(ConfigurationError, match="policy.toml is not valid TOML"):
        load_policy(path)


def test_settings_read_the_policy_file_the_environment_names(tmp_path: Path) -> None:
    # A policy file outside the data directory, named by HIE_POLICY_FILE.
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    named = write_policy(elsewhere, '[referral]\nfollow_up_within = "10d"\n')
    data = tmp_path / "data"
    settings = load_settings({"HIE_DATA_DIR": str(data), "HIE_POLICY_FILE": str(named)})
    assert settings.referral_policy.follow_up_within == timedelta(days=10)
    # Without it, the data directory's policy.toml is read.
    write_policy(data, '[referral]\narrive_within = "3d"\n')
    settings = load_settings({"HIE_DATA_DIR": str(data)})
    assert settings.referral_policy.arrive_within == timedelta(days=3)
    assert settings.referral_policy.follow_up_within == timedelta(days=14)
    # A broken named file stops the settings from loading.
    write_policy(elsewhere, '[referral]\nfollow_up_within = "soon"\n')
    with pytest.raises(ConfigurationError, match="follow_up_within"):
        load_settings({"HIE_DATA_DIR": str(data), "HIE_POLICY_FILE": str(named)})


def test_scheduler_seconds_must_be_positive(tmp_path: Path) -> None:
    assert load_settings({"HIE_DATA_DIR": str(tmp_path)}).scheduler_seconds == 30.0
    ok = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_SCHEDULER_SECONDS": "2.5"})
    assert ok.scheduler_seconds == 2.5
    for bad in ("0", "-1", "x", ""):
        with pytest.raises(ConfigurationError, match="HIE_SCHEDULER_SECONDS must be a positive"):
            load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_SCHEDULER_SECONDS": bad})


# Notifications ---------------------------------------------------------------------------------

def step_row(action: str, status: str, actor: str | None, **changes: Any) -> dict[str, Any]:
    """One row as the reader's events_after returns it: the step joined with its referral."""
    row: dict[str, Any] = {
        "position": 41, "version": 2, "action": action, "status": status, "actor": actor,
        "at": T0 + timedelta(hours=1), "referral_id": RID, "reference": REFERENCE,
        "patient_id": PATIENT, "direction": "upward", "from_institution": TOWNSHIP,
        "to_institution": COUNTY, "urgency": "urgent", "deadline": T0 + timedelta(hours=24),
        "follow_up_due": None, "overdue": False}
    return row | changes


@pytest.mark.parametrize(("action", "status", "actor", "told"), [
    ("request", "requested", TOWNSHIP, [COUNTY]),
    ("accept", "accepted", COUNTY, [TOWNSHIP]),
    ("reject", "rejected", COUNTY, [TOWNSHIP]),
    ("arrive", "arrived", COUNTY, [TOWNSHIP]),
    ("complete", "completed", COUNTY, [TOWNSHIP]),
    ("back_refer", "back_referred", COUNTY, [TOWNSHIP]),
    ("cancel", "cancelled", TOWNSHIP, [COUNTY]),
    ("follow_up", "followed_up", TOWNSHIP, [COUNTY]),
    ("expire", "expired", None, [TOWNSHIP, COUNTY]),
    ("mark_overdue", "back_referred", None, [TOWNSHIP, COUNTY]),
])
def test_each_step_is_told_to_the_other_party(action: str, status: str, actor: str | None,
                                              told: list[str]) -> None:
    assert sorted(recipients(step_row(action, status, actor))) == sorted(told)


def test_a_downward_referral_tells_the_township_of_the_request() -> None:
    # The county hospital refers down to the township: the township is the receiver now.
    down = dict(direction="downward", from_institution=COUNTY, to_institution=TOWNSHIP)
    assert recipients(step_row("request", "requested", COUNTY, **down)) == [TOWNSHIP]
    assert recipients(step_row("accept", "accepted", TOWNSHIP, **down)) == [COUNTY]


def test_a_notification_says_where_the_referral_stands() -> None:
    due = T0 + timedelta(days=21)
    row = step_row("back_refer", "back_referred", COUNTY, position=57, version=5,
                   deadline=None, follow_up_due=due)
    assert message(row) == {
        "type": "referral", "event": "back_refer", "status": "back_referred",
        "referral": REFERENCE, "referral_id": str(RID),
        "service_request": f"ServiceRequest/{RID}", "patient_id": str(PATIENT),
        "direction": "upward", "urgency": "urgent", "from_institution": TOWNSHIP,
        "to_institution": COUNTY, "by": "receiver",
        "at": (T0 + timedelta(hours=1)).isoformat(), "deadline": None,
        "follow_up_due": due.isoformat(), "follow_up_overdue": False, "position": 57}
    assert message(row)["follow_up_due"] == "2026-03-23T10:15:00+08:00"


@pytest.mark.parametrize(("action", "status", "actor", "by"), [
    ("request", "requested", TOWNSHIP, "sender"), ("cancel", "cancelled", TOWNSHIP, "sender"),
    ("accept", "accepted", COUNTY, "receiver"), ("expire", "expired", None, "exchange"),
    ("mark_overdue", "back_referred", None, "exchange")])
def test_a_notification_names_the_party_that_acted(action: str, status: str,
                                                   actor: str | None, by: str) -> None:
    assert message(step_row(action, status, actor))["by"] == by


def test_a_notification_carries_no_clinical_content() -> None:
    # Even if the row carried the referral's content, the message would not pass it on.
    row = step_row("request", "requested", TOWNSHIP, reason=REASON, content=CONTENT,
                   details=BACK_REFERRAL)
    body = message(row)
    clinical = {"reason", "history", "treatment", "diagnosis", "impression", "content",
                "details", "results", "follow_up_plan", "notes"}
    assert not clinical & set(body)
    text = json.dumps(body, ensure_ascii=False)
    for value in (REASON, CONTENT["history"], "脑梗死", "I63.9", "李建国"):
        assert value not in text


# FHIR: ServiceRequest, Task, inbox rows -----------------------------------------------------------

def referral_row(**changes: Any) -> dict[str, Any]:
    """A ``referrals`` row; ``content`` as PostgreSQL's jsonb comes back through the driver."""
    row: dict[str, Any] = {
        "referral_id": RID, "reference": REFERENCE, "patient_id": PATIENT,
        "direction": "upward", "from_institution": TOWNSHIP, "to_institution": COUNTY,
        "urgency": "urgent", "status": "requested",
        "content": json.dumps(CONTENT, ensure_ascii=False), "requested_at": T0,
        "decided_at": None, "accepted_at": None, "arrived_at": None, "completed_at": None,
        "back_referred_at": None, "followed_up_at": None, "closed_at": None,
        "rejection_reason": None, "back_referral": None, "deadline": T0 + timedelta(hours=24),
        "follow_up_due": None, "overdue": False, "care_from": None, "care_until": None,
        "position": 40, "updated": 40}
    return row | changes


def event_row(action: str, status: str, institution: str | None, details: Any,
              **changes: Any) -> dict[str, Any]:
    """A ``referral_events`` row."""
    row: dict[str, Any] = {
        "referral_id": RID, "version": 5, "action": action, "status": status,
        "institution": institution, "at": T0 + timedelta(days=7), "reported_at": None,
        "details": details, "position": 57}
    return row | changes


def extension(resource: dict[str, Any], name: str) -> Any:
    found = [e for e in resource["extension"] if e["url"].endswith(":" + name)]
    assert len(found) <= 1
    return found[0] if found else None


def assert_fhir_json(value: Any, where: str = "$") -> None:
    """FHIR JSON has no nulls and no empty arrays or objects (the models drop them silently,
    so check the dict as it is sent)."""
    assert value is not None and value != [] and value != {}, f"{where} is empty"
    if isinstance(value, dict):
        for key, inner in value.items():
            assert_fhir_json(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            assert_fhir_json(inner, f"{where}[{i}]")


def test_the_status_tables_cover_every_referral_state_exactly() -> None:
    assert set(SERVICE_REQUEST_STATUS) == set(STATES)
    assert set(TASK_STATUS) == set(STATES)
    assert set(SERVICE_REQUEST_STATUS.values()) <= REQUEST_STATUS
    assert set(TASK_STATUS.values()) <= TASK_STATUS_CODES


@pytest.mark.parametrize(("state", "request_status", "task_status"), [
    ("requested", "active", "requested"), ("accepted", "active", "accepted"),
    ("rejected", "revoked", "rejected"), ("arrived", "active", "in-progress"),
    ("completed", "active", "completed"), ("back_referred", "active", "completed"),
    ("followed_up", "completed", "completed"), ("cancelled", "revoked", "cancelled"),
    ("expired", "revoked", "failed")])
def test_each_state_maps_to_its_fhir_status(state: str, request_status: str,
                                            task_status: str) -> None:
    # The loop stays open (active) until the follow-up; a refused or dead referral is revoked.
    assert service_request(referral_row(status=state), T0)["status"] == request_status
    step = task(event_row("step", state, COUNTY, {}), PATIENT)
    assert step["status"] == task_status
    assert step["businessStatus"]["coding"][0]["code"] == state


@pytest.mark.parametrize(("urgency", "priority"), [
    ("emergency", "stat"), ("urgent", "urgent"), ("routine", "routine")])
def test_urgency_maps_to_priority(urgency: str, priority: str) -> None:
    assert service_request(referral_row(urgency=urgency), T0)["priority"] == priority


@pytest.mark.parametrize("content", [CONTENT, json.dumps(CONTENT, ensure_ascii=False)],
                         ids=["dict", "json-text"])
def test_the_service_request_names_parties_reason_and_notes(content: Any) -> None:
    resource = service_request(referral_row(content=content), T0)
    assert resource["id"] == str(RID)
    assert resource["identifier"] == [{"system": "urn:county-hie:referral", "value": REFERENCE}]
    assert resource["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert resource["requester"] == {"reference": f"Organization/{TOWNSHIP}",
                                     "display": "李建国"}
    assert resource["performer"] == [{"reference": f"Organization/{COUNTY}"}]
    assert resource["performerType"] == {"text": "神经内科"}
    assert resource["reasonCode"] == [{
        "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}], "text": REASON}]
    assert resource["note"] == [{"text": "History: 高血压病史十年"},
                                {"text": "Treatment so far: 已予阿司匹林口服"}]
    assert resource["authoredOn"] == "2026-03-02T10:10:00+08:00"
    assert resource["category"][0]["text"].startswith("上转")
    assert extension(resource, "referral-deadline")["valueDateTime"] == \
        "2026-03-03T10:15:00+08:00"


def test_a_request_without_optional_content_has_no_empty_parts() -> None:
    bare = {k: v for k, v in CONTENT.items()
            if k not in ("impression", "history", "treatment", "to_department")}
    resource = service_request(referral_row(content=bare, direction="downward"), T0)
    # No impression: the reason is text only, without an empty coding list.
    assert resource["reasonCode"] == [{"text": REASON}]
    assert "note" not in resource and "performerType" not in resource
    assert resource["category"][0]["text"].startswith("下转")


@pytest.mark.parametrize(("overdue", "due_in", "followed_up", "expected"), [
    (False, timedelta(days=3), False, False),  # before the due time
    (False, timedelta(0), False, True),  # the due time has come without a follow-up
    (False, -timedelta(days=1), False, True),  # passed, the scheduler has not flagged it yet
    (True, -timedelta(days=1), False, True),  # flagged by the scheduler
    (True, timedelta(days=3), False, True),  # the flag wins over a clock behind the ledger's
    (False, -timedelta(days=1), True, False)])  # followed up (late, but done)
def test_the_follow_up_overdue_extension(overdue: bool, due_in: timedelta, followed_up: bool,
                                         expected: bool) -> None:
    now = T0 + timedelta(days=20)
    row = referral_row(status="followed_up" if followed_up else "back_referred", deadline=None,
                       follow_up_due=now + due_in, overdue=overdue,
                       followed_up_at=now - timedelta(hours=1) if followed_up else None)
    resource = service_request(row, now)
    assert extension(resource, "follow-up-overdue") == {
        "url": "urn:county-hie:fhir:StructureDefinition:follow-up-overdue",
        "valueBoolean": expected}
    assert extension(resource, "follow-up-due")["valueDateTime"] == (now + due_in).isoformat()
    assert extension(resource, "referral-deadline") is None


def test_no_follow_up_extensions_before_the_back_referral() -> None:
    resource = service_request(referral_row(status="arrived"), T0)
    assert extension(resource, "follow-up-due") is None
    assert extension(resource, "follow-up-overdue") is None
    assert extension(resource, "referral-status") == {
        "url": "urn:county-hie:fhir:StructureDefinition:referral-status", "valueCode": "arrived"}


@pytest.mark.parametrize("details", [BACK_REFERRAL, json.dumps(BACK_REFERRAL, ensure_ascii=False)],
                         ids=["dict", "json-text"])
def test_the_back_referral_task_gives_diagnosis_results_and_plan(details: Any) -> None:
    reported = datetime(2026, 3, 9, 16, 0, tzinfo=CST)
    step = task(event_row("back_refer", "back_referred", COUNTY, details,
                          reported_at=reported), PATIENT)
    assert step["id"] == f"{RID}-5"
    assert step["status"] == "completed"
    assert step["code"]["coding"][0]["code"] == "back_refer"
    assert step["focus"] == {"reference": f"ServiceRequest/{RID}"}
    assert step["for"] == {"reference": f"Patient/{PATIENT}"}
    assert step["owner"] == {"reference": f"Organization/{COUNTY}"}
    assert step["requester"] == {"display": "王志强"}
    assert step["executionPeriod"] == {"start": reported.isoformat()}
    outputs = {o["type"]["text"]: o for o in step["output"]}
    assert outputs["diagnosis"]["valueCodeableConcept"] == {
        "coding": [{"system": ICD10, "code": "I63.9", "display": "脑梗死"}]}
    assert outputs["results"]["valueString"] == BACK_REFERRAL["results"]
    assert outputs["treatment"]["valueString"] == BACK_REFERRAL["treatment"]
    assert outputs["follow-up plan"]["valueString"] == BACK_REFERRAL["follow_up_plan"]


def test_a_rejection_task_gives_its_reason() -> None:
    step = task(event_row("reject", "rejected", COUNTY, {"reason": "本院无神经介入条件"}),
                PATIENT)
    assert step["statusReason"] == {"text": "本院无神经介入条件"}
    assert "output" not in step


def test_the_overdue_mark_is_the_scheduler_flagging_a_pending_follow_up() -> None:
    due = T0 + timedelta(days=21)
    step = task(event_row("mark_overdue", "back_referred", None,
                          json.dumps({"due": due.isoformat()})), PATIENT)
    assert step["status"] == "in-progress"
    assert step["businessStatus"]["coding"] == [
        {"system": "urn:county-hie:referral-status", "code": "follow_up_overdue"}]
    # No institution took the step: the owner is named, not referenced.
    assert step["owner"] == {"display": "the exchange's referral scheduler"}


def test_an_expiry_task_is_owned_by_the_scheduler() -> None:
    step = task(event_row("expire", "expired", None, {}), PATIENT)
    assert step["status"] == "failed"
    assert "reference" not in step["owner"] and step["owner"]["display"]


@pytest.mark.parametrize(("deadline_in", "passed"), [
    (timedelta(hours=1), False), (timedelta(0), True), (-timedelta(seconds=1), True)])
def test_the_box_row_flags_a_passed_deadline(deadline_in: timedelta, passed: bool) -> None:
    now = T0 + timedelta(hours=10)
    row = box_row(referral_row(deadline=now + deadline_in), now)
    assert row["deadline_passed"] is passed
    assert row["deadline"] == (now + deadline_in).isoformat()
    assert row["follow_up_overdue"] is False


@pytest.mark.parametrize(("overdue", "due_in", "followed_up", "expected"), [
    (False, timedelta(days=1), False, False), (False, timedelta(0), False, True),
    (True, timedelta(days=1), False, True), (False, -timedelta(days=1), True, False)])
def test_the_box_row_flags_an_overdue_follow_up(overdue: bool, due_in: timedelta,
                                                followed_up: bool, expected: bool) -> None:
    now = T0 + timedelta(days=20)
    row = box_row(referral_row(status="back_referred", deadline=None, overdue=overdue,
                               follow_up_due=now + due_in,
                               followed_up_at=now if followed_up else None), now)
    assert row["follow_up_overdue"] is expected
    assert row["deadline_passed"] is False and row["deadline"] is None


def test_the_box_row_carries_no_clinical_content() -> None:
    row = box_row(referral_row(back_referral=json.dumps(BACK_REFERRAL, ensure_ascii=False)), T0)
    assert set(row) == {"referral", "service_request", "patient_id", "direction",
                        "from_institution", "to_institution", "urgency", "status",
                        "requested_at", "deadline", "deadline_passed", "follow_up_due",
                        "follow_up_overdue"}
    assert REASON not in json.dumps(row, ensure_ascii=False)
    assert row["requested_at"] == T0.isoformat() and row["patient_id"] == str(PATIENT)


@pytest.mark.parametrize("state", STATES)
def test_every_service_request_is_valid_fhir_r4(state: str) -> None:
    followed = state == "followed_up"
    back = state in ("back_referred", "followed_up")
    row = referral_row(status=state, deadline=None if back else T0 + timedelta(hours=24),
                       follow_up_due=T0 + timedelta(days=21) if back else None,
                       followed_up_at=T0 + timedelta(days=20) if followed else None)
    for content in (CONTENT, {k: v for k, v in CONTENT.items()
                              if k not in ("impression", "history", "treatment")}):
        resource = service_request(row | {"content": content}, T0 + timedelta(days=22))
        assert_fhir_json(resource)
        model = ServiceRequest.model_validate(resource)
        assert model.status in REQUEST_STATUS and model.intent in REQUEST_INTENT
        assert model.priority in REQUEST_PRIORITY
        assert model.reasonCode[0].text == REASON


@pytest.mark.parametrize(("action", "status", "institution", "details"), [
    ("request", "requested", TOWNSHIP, {}),
    ("accept", "accepted", COUNTY, {"at": "2026-03-02T11:00:00+08:00", "by": "王志强",
                                     "department": "神经内科",
                                     "appointment": "2026-03-03T09:00:00+08:00"}),
    ("reject", "rejected", COUNTY, {"reason": "本院无神经介入条件"}),
    ("arrive", "arrived", COUNTY, {"notes": "患者由家属陪同到院"}),
    ("complete", "completed", COUNTY, {}),
    ("back_refer", "back_referred", COUNTY, BACK_REFERRAL),
    ("follow_up", "followed_up", TOWNSHIP, {"notes": "血压 138/86，继续服药"}),
    ("cancel", "cancelled", TOWNSHIP, {"reason": "患者拒绝转诊"}),
    ("expire", "expired", None, {}),
    ("mark_overdue", "back_referred", None, {"due": "2026-03-23T10:15:00+08:00"})])
def test_every_task_is_valid_fhir_r4(action: str, status: str, institution: str | None,
                                     details: dict[str, Any]) -> None:
    reported = T0 if institution else None
    step = task(event_row(action, status, institution, json.dumps(details, ensure_ascii=False),
                          reported_at=reported), PATIENT)
    assert_fhir_json(step)
    model = Task.model_validate(step)
    assert model.status in TASK_STATUS_CODES and model.intent in TASK_INTENT
    assert model.for_fhir is not None and model.for_fhir.reference == f"Patient/{PATIENT}"


@pytest.mark.parametrize("text", ["referral = 5\n", 'referral = "2h"\n'])
def test_a_referral_key_that_is_not_a_table_is_a_configuration_error(tmp_path: Path,
                                                                     text: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="must be a table"):
        load_policy(path)


def test_an_enormous_duration_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="positive duration"):
        parse_duration("99999999999d", "[referral] arrive_within")


def test_a_named_policy_file_that_does_not_exist_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings({"HIE_DATA_DIR": str(tmp_path),
                       "HIE_POLICY_FILE": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("name", ["HIE_SCHEDULER_SECONDS", "HIE_AUDIT_HEAD_SECONDS"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-3"])
def test_seconds_settings_refuse_nan_infinity_and_non_positive(tmp_path: Path, name: str,
                                                              value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings({"HIE_DATA_DIR": str(tmp_path), name: value})


def test_the_access_policy_comes_from_the_policy_file(tmp_path: Path) -> None:
    from consent.decision import DEFAULT_POLICY
    from exchange.settings import load_access_policy

    path = tmp_path / "policy.toml"
    assert load_access_policy(path) is DEFAULT_POLICY
    path.write_text('[access]\nrecent_results = "30d"\nclinical_roles = ["physician"]\n'
                    '[access.purposes]\nTREAT = ["diagnosis", "medication"]\n')
    policy = load_access_policy(path)
    assert policy.recent_results == timedelta(days=30) and policy.clinical_roles == ("physician",)
    assert policy.purposes == {"TREAT": frozenset({"diagnosis", "medication"})}
    # A purpose may not be given a sensitive category: only a consent names those.
    path.write_text('[access.purposes]\nTREAT = ["hiv"]\n')
    with pytest.raises(ConfigurationError, match="sensitive"):
        load_access_policy(path)
    path.write_text('[access]\nwho = 1\n')
    with pytest.raises(ConfigurationError, match="unknown keys"):
        load_access_policy(path)
