"""`hie submit`'s report: each file's outcome told truthfully in items, refusals naming the
item and its reason, left-outs grouped by type with counts (every entry in the JSON), and the
JSON document's stable keys."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from domain.problems import Problem
from exchange.cli.submit_depends import ALWAYS, Dependence
from exchange.cli.submit_files import Reader, expand, find_mapping, is_directory_bundle
from exchange.cli.submit_report import (
    ACCEPTED,
    HELD_BEFORE,
    NO_RECEIPT,
    NOT_SENT,
    QUEUED,
    REJECTED,
    REPEAT,
    WOULD_SEND,
    FileOutcome,
    RunReport,
    Sent,
    group_left_out,
    left_out_line,
    problem_text,
)
from tests.unit import csv_samples

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = ROOT.parent / "shared" / "testdata" / "fhir" / "synthea-fhir-data-pipes"
PATH = Path("exports/visits.hl7")
REFUSED = {
    "code": "referral.unknown_institution",
    "message": "to_institution names no registered institution of the consortium",
    "field": "payload.to_institution",
    "item": 1,
    "source_id": "REF-9",
}


def outcome(*submissions: tuple[int, str], problems: int = 0) -> FileOutcome:
    return FileOutcome(
        PATH,
        "hl7v2",
        submissions=[
            Sent(f"sha256-{n}", items, status, problems=[REFUSED] if status == REJECTED else [])
            for n, (items, status) in enumerate(submissions)
        ],
        problems=[
            Problem("hl7.required", "PV1-19 is needed", "PV1-19", None, f"MSG/{n}")
            for n in range(problems)
        ],
    )


@pytest.mark.parametrize(
    ("submissions", "problems", "sent", "dry"),
    [
        ([(3, ACCEPTED), (2, REPEAT)], 0, "sent", None),
        ([(3, ACCEPTED), (2, REJECTED)], 0, "partly refused", None),
        ([(3, ACCEPTED)], 1, "partly refused", None),
        ([(2, REJECTED)], 0, "refused", None),
        ([], 2, "refused", None),
        ([], 0, "nothing to send", None),
        ([(3, ACCEPTED), (2, NO_RECEIPT)], 0, "not delivered", None),
        ([(2, NOT_SENT)], 0, "not delivered", None),
        ([(3, ACCEPTED), (2, QUEUED)], 0, "queued at the edge", None),
        ([(2, QUEUED), (1, NO_RECEIPT)], 0, "not delivered", None),
        ([(2, QUEUED)], 0, None, "nothing to send"),
        ([(3, WOULD_SEND), (1, HELD_BEFORE)], 0, None, "would be sent"),
        ([(3, WOULD_SEND)], 1, None, "would be partly refused"),
        ([], 1, None, "would be refused"),
        ([], 0, None, "nothing to send"),
    ],
)
def test_a_files_outcome_says_what_became_of_its_items(
    submissions: list[tuple[int, str]], problems: int, sent: str | None, dry: str | None
) -> None:
    file = outcome(*submissions, problems=problems)
    if sent is not None:
        assert file.outcome(dry_run=False) == sent
    if dry is not None:
        assert file.outcome(dry_run=True) == dry


def test_what_waits_at_a_clinics_edge_is_told_apart_from_what_was_delivered() -> None:
    file = outcome((3, ACCEPTED), (2, QUEUED), (4, REJECTED))
    assert file.outcome_line() == (
        "visits.hl7: queued at the edge: 2 item(s) kept by the clinic's edge node for the "
        "exchange, "
        "without a receipt yet; 3 accepted; 4 item(s) refused by the exchange"
    )
    assert file.counts()["queued_at_edge"] == 2 and file.counts()["accepted"] == 3
    report = RunReport("taoyuan-vc", dry_run=False, files=[file])
    assert report.totals()["submissions"]["queued_at_edge"] == 1
    assert report.summary_line().endswith(
        "; 1 queued at the clinic's edge node, to be sent when its link is up (run the same "
        "command again later for their receipts: nothing is sent twice)"
    )
    assert "queued" not in RunReport("taoyuan-vc", False, [outcome((3, ACCEPTED))]).summary_line()


def test_an_earlier_runs_queued_submission_settled_now_is_told_with_its_reasons() -> None:
    report = RunReport("taoyuan-vc", dry_run=False)
    report.earlier = [
        Sent("sha256-e1", 0, ACCEPTED, positions=[41]),
        Sent("sha256-e2", 0, REJECTED, problems=[REFUSED]),
    ]
    assert report.earlier_lines() == [
        "earlier submission sha256-e1: accepted",
        "earlier submission sha256-e2: rejected",
        f"earlier submission sha256-e2: refused: {problem_text(REFUSED)}",
    ]
    assert [s["status"] for s in report.as_dict()["earlier_submissions"]] == [
        "accepted",
        "rejected",
    ]


def test_what_the_exchanges_receipts_warn_of_is_told_once_per_code() -> None:
    report = RunReport("taoyuan-vc", dry_run=False)
    for minutes in (59, 60):
        report.receipt_warnings(
            {
                "status": "accepted",
                "warnings": [
                    {"code": "edge.clock_ahead", "message": f"about {minutes} minutes ahead"}
                ],
            }
        )
    report.receipt_warnings({"status": "accepted"})
    report.receipt_warnings({"warnings": ["not a warning", {"message": "no code"}]})
    assert report.warning_lines() == [
        "the exchange warns: about 60 minutes ahead [edge.clock_ahead]"
    ]
    assert report.as_dict()["exchange_warnings"] == [
        {"code": "edge.clock_ahead", "message": "about 60 minutes ahead"}
    ]


def test_the_line_of_a_file_whose_only_submission_was_refused_names_the_item() -> None:
    file = outcome((3, REJECTED))
    assert file.outcome_line() == (
        "visits.hl7: refused: none accepted; 3 item(s) refused by the exchange"
    )
    assert file.refusal_lines() == [
        "visits.hl7: refused: item REF-9, payload.to_institution: to_institution names no "
        "registered institution of the consortium [referral.unknown_institution]",
        "visits.hl7: refused with it: 2 other item(s) of submission sha256-0 (a submission is "
        "accepted or refused whole)",
    ]
    assert not any("envelope" in line for line in [file.outcome_line(), *file.refusal_lines()])


def test_a_partly_refused_file_counts_items_accepted_and_refused() -> None:
    file = outcome((4, ACCEPTED), (1, REJECTED), problems=2)
    assert file.outcome_line() == (
        "visits.hl7: partly refused: 4 item(s) accepted; 1 item(s) refused by the exchange, "
        "2 refused before sending"
    )
    counts = file.counts()
    assert (counts["accepted"], counts["refused"], counts["refused_before_sending"]) == (4, 1, 2)
    assert file.refusal_lines() == [
        "visits.hl7: refused: item REF-9, payload.to_institution: to_institution names no "
        "registered institution of the consortium [referral.unknown_institution]"
    ]


def test_a_file_sent_before_says_its_items_are_already_held() -> None:
    assert outcome((3, HELD_BEFORE), (2, REPEAT)).outcome_line() == (
        "visits.hl7: sent before: its 5 item(s) already held (nothing stored twice)"
    )
    assert outcome((3, ACCEPTED), (2, REPEAT)).outcome_line() == (
        "visits.hl7: sent: 5 item(s) accepted in 2 submission(s) (2 already held: nothing "
        "stored twice)"
    )


def test_warnings_are_said_before_sending_and_kept_in_the_json(tmp_path: Path) -> None:
    # A resident whose recorded sex contradicts the resident ID: sent, with a warning.
    name = "taoyuan-vc-residents.csv"
    (tmp_path / name).write_bytes(csv_samples.edited(name, {(2, "性别"): "男"}))
    shutil.copy(csv_samples.SAMPLES / "taoyuan-vc.mapping.toml", tmp_path)
    mapping = find_mapping([tmp_path / name], "taoyuan-vc", None)
    file = FileOutcome.of(Reader("taoyuan-vc", mapping=mapping).read(tmp_path / name))
    (warning,) = file.warnings
    assert file.checked_lines() == [
        f"{name}: warning: item {warning.source_id}, payload.gender: {warning.message} "
        f"[{warning.code}]"
    ]
    assert file.described().endswith("; 0 problem(s); 1 warning(s)")
    assert file.as_dict(dry_run=True)["warnings"] == [warning.as_dict()]
    assert file.outcome(dry_run=True) == "would be sent"
    said = " ".join([*file.checked_lines(), json.dumps(file.as_dict(True), ensure_ascii=False)])
    assert not any(value in said for value in csv_samples.PERSONAL)


def test_a_run_that_stopped_says_what_got_no_receipt_and_what_was_not_sent() -> None:
    stopped = outcome((3, ACCEPTED), (2, NO_RECEIPT), (4, NOT_SENT))
    assert stopped.outcome_line() == (
        "visits.hl7: not delivered: 2 item(s) sent without a receipt; 4 item(s) not sent; "
        "3 accepted"
    )


def test_a_refusal_of_a_whole_submission_names_the_submission() -> None:
    file = outcome((2, REJECTED))
    file.submissions[0].problems = [
        {"code": "submission.rejected_before", "message": "refused before", "field": ""}
    ]
    assert file.refusal_lines() == [
        "visits.hl7: refused: submission sha256-0: refused before [submission.rejected_before]"
    ]


def test_refusals_before_sending_name_the_item_or_the_place_never_an_envelope() -> None:
    file = outcome(problems=1)
    file.problems.append(Problem("hl7.unsupported_type", "SIU^S12 is not mapped", "MSH-9"))
    assert file.checked_lines() == [
        "visits.hl7: refused before sending: item MSG/0, PV1-19: PV1-19 is needed [hl7.required]",
        "visits.hl7: refused before sending: MSH-9: SIU^S12 is not mapped [hl7.unsupported_type]",
    ]
    # Two problems of one item are one item refused; one of the whole message another.
    file.problems.append(Problem("hl7.required", "PV1-2 is needed", "PV1-2", None, "MSG/0"))
    assert file.refused_before == 2


def synthea_bundle() -> tuple[dict[str, Any], FileOutcome]:
    files = expand([str(SYNTHEA)])
    directories = [f.read_bytes() for f in files if is_directory_bundle(f.read_bytes())]
    path = next(SYNTHEA.glob("Ardith*.json"))
    read = Reader("county-hospital", directories=directories).read(path)
    return json.loads(path.read_text()), FileOutcome.of(read)


def test_left_out_resources_are_counted_by_type_on_one_short_line() -> None:
    # A Synthea patient bundle: claims and benefit statements are no clinical items.
    bundle, file = synthea_bundle()
    types = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    line = file.described()
    assert (
        f"{types['Claim']} Claim, {types['ExplanationOfBenefit']} ExplanationOfBenefit, "
        f"{types['Provenance']} Provenance (not clinical items the exchange keeps)"
    ) in line
    assert len(line) < 600 < len("; ".join(file.left_out))
    # Every entry stays in the JSON report, and the groups add up to them.
    left = file.as_dict(dry_run=True)["left_out"]
    assert left["entries"] == file.left_out
    assert sum(g["count"] for g in left["groups"]) == len(file.left_out)
    assert {"what": "Claim", "reason": "resource type not mapped", "count": types["Claim"]} in (
        left["groups"]
    )


def test_left_outs_of_no_type_are_grouped_by_place_and_reason() -> None:
    groups = group_left_out(
        [
            "OBX[2]: OBX-11 says results pending; nothing to send",
            "OBX[5]: OBX-11 says results pending; nothing to send",
            "row 7: the same as row 3 (sent once)",
            "ADT^A01 EVN: segment not mapped",
        ]
    )
    assert [(g.what, g.count) for g in groups] == [("OBX", 2), ("row", 1), ("EVN", 1)]
    assert left_out_line(groups) == (
        "2 OBX (OBX-11 says results pending; nothing to send); 1 row (the same as row 3 (sent "
        "once)); 1 EVN (segments the exchange does not read)"
    )


FILE_KEYS = {
    "path",
    "name",
    "format",
    "directory_bundle",
    "outcome",
    "kinds",
    "items",
    "submissions",
    "problems",
    "warnings",
    "left_out",
    "depends_on_exchange",
}
ITEM_KEYS = {
    "in_submissions",
    "would_be_sent",
    "accepted",
    "already_held",
    "refused",
    "refused_before_sending",
    "no_receipt",
    "not_sent",
    "queued_at_edge",
    "depends_on_exchange",
}


def test_the_json_report_has_its_documented_keys_whatever_happened() -> None:
    partly = outcome((4, ACCEPTED), (1, REJECTED), problems=1)
    partly.depends.append(Dependence("REF-9", "referral", ("referral.unknown",), "a reason"))
    report = RunReport("dongcheng-thc", dry_run=False, files=[partly, outcome()], exit_code=1)
    doc = json.loads(json.dumps(report.as_dict(), ensure_ascii=False))
    assert set(doc) == {
        "report_version",
        "institution",
        "dry_run",
        "exit_code",
        "error",
        "exchange_warnings",
        "earlier_submissions",
        "totals",
        "depends_on_exchange_always",
        "files",
    }
    assert (doc["report_version"], doc["exit_code"], doc["error"]) == (1, 1, None)
    assert set(doc["totals"]) == {
        "files",
        "items",
        "submissions",
        "problems_before_sending",
        "warnings",
    }
    assert set(doc["totals"]["items"]) == ITEM_KEYS
    assert set(doc["totals"]["submissions"]) == {
        "would_be_sent",
        "accepted",
        "already_held",
        "rejected",
        "no_receipt",
        "not_sent",
        "queued_at_edge",
    }
    for file in doc["files"]:
        assert set(file) == FILE_KEYS and set(file["items"]) == ITEM_KEYS
        assert set(file["left_out"]) == {"groups", "entries"}
    first = doc["files"][0]
    assert first["outcome"] == "partly refused"
    assert [s["status"] for s in first["submissions"]] == ["accepted", "rejected"]
    assert set(first["submissions"][1]) == {
        "submission_id",
        "items",
        "status",
        "positions",
        "problems",
    }
    assert first["submissions"][1]["problems"] == [REFUSED]
    assert first["problems"] == [
        {
            "code": "hl7.required",
            "message": "PV1-19 is needed",
            "field": "PV1-19",
            "source_id": "MSG/0",
        }
    ]
    assert first["depends_on_exchange"] == [
        {
            "source_id": "REF-9",
            "kind": "referral",
            "codes": ["referral.unknown"],
            "reason": "a reason",
        }
    ]
    assert doc["totals"]["items"]["accepted"] == 4 and doc["totals"]["items"]["refused"] == 1
    # Only a dry run lists the checks every item meets.
    assert doc["depends_on_exchange_always"] == []
    dry = RunReport("dongcheng-thc", dry_run=True).as_dict()
    assert dry["depends_on_exchange_always"] == [s.as_dict() for s in ALWAYS]
