"""The dry run's "depends on the exchange": every gateway check that reads the ledger is
named for the items it applies to, and what the same run sends earlier is resolved."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

from domain.resident_id import make_resident_id
from exchange.cli.submit_depends import ALWAYS, RunState, depends

ROOT = Path(__file__).resolve().parents[2]
HERE = "dongcheng-thc"
A = make_resident_id("340524", date(1980, 1, 1), 11)
B = make_resident_id("340524", date(1975, 6, 12), 22)


def item(kind: str, source_id: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"source_id": source_id, "kind": kind, "payload": payload, **extra}


def patient(rid: str = A) -> dict[str, Any]:
    return {"patient": {"resident_id": rid}}


def condition(source_id: str, **extra: Any) -> dict[str, Any]:
    return item("condition", source_id, patient(), **extra)


def codes_of(sent: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Each item's codes, sent in this order in one run (each in a submission of its own)."""
    state = RunState(HERE)
    found = [depends(i, state, submission=f"s{n}", file="f") for n, i in enumerate(sent)]
    return [d.codes if d else () for d in found]


# One item for each way a ledger check applies; ``test_every_ledger_check_is_named`` holds
# the gateway's refusal codes to what these name.
SAMPLES = {
    "amend": condition("Condition/2", amends="Condition/1"),
    "retract": item("retract", "R/1", {**patient(), "record": "Condition/9", "reason": "错"}),
    "consent": item("consent", "Consent/1", {**patient(), "scope": ["county-hospital"]}),
    "withdrawal": item("consent_withdrawal", "W/1", {**patient(), "consent": f"{HERE}/C/9"}),
    "confirmation": item("consent_confirmation", "K/1", {**patient(), "consent": f"{HERE}/C/9"}),
    "contract": item("care_contract", "CC/1", patient()),
    "seal": item("seal", "S/1", patient()),
    "referral": item("referral", "REF/1", {**patient(), "to_institution": "county-hospital"}),
    "to_self": item("referral", "REF/2", {**patient(), "to_institution": HERE}),
    "action": item(
        "referral_action", "ACT/1", {**patient(), "referral": "x/1", "action": "accept"}
    ),
    "merge": item("merge", "M/1", {**patient(), "merged": {"mrn": "M-77"}}),
    "decision": item("merge", "M/2", {**patient(), "request": "x/M/1", "decision": "approve"}),
    "unmerge": item("unmerge", "U/1", {**patient(), "unmerged": {"mrn": "M-77"}}),
}


def test_items_no_ledger_check_reads_are_passed() -> None:
    # Entries, patients, guardians, unseals: nothing the exchange holds decides them (beyond
    # the checks on every item, said once).
    sent = [condition("Condition/1"), item("patient", "P/1", patient()), item("unseal", "U", {})]
    assert codes_of(sent) == [(), (), ()]


def test_a_correction_depends_unless_the_run_sends_its_record_first() -> None:
    assert codes_of([SAMPLES["amend"]]) == [("correction.unknown_record",)]
    assert codes_of([condition("Condition/1"), SAMPLES["amend"]]) == [(), ()]
    retract = SAMPLES["retract"]
    assert codes_of([retract]) == [("correction.unknown_record",)]
    assert codes_of([condition("Condition/9"), retract]) == [(), ()]
    # An admission and its discharge share a record: the record, not the source id, counts.
    admission = condition("Condition/A", record="visit-1")
    assert codes_of([admission, condition("Condition/B", amends="visit-1")]) == [(), ()]


def test_a_consent_depends_on_the_institutions_its_scope_names() -> None:
    assert codes_of([SAMPLES["consent"]]) == [("consent.scope_unknown",)]
    state = RunState(HERE)
    said = depends(SAMPLES["consent"], state)
    assert said is not None and "county-hospital" in said.reason
    own = item("consent", "Consent/2", {**patient(), "scope": ["*", HERE]})
    assert codes_of([own]) == [()]


def test_a_withdrawal_of_a_consent_the_run_sends_for_the_same_patient_is_resolved() -> None:
    consent = item("consent", "C/9", {**patient(), "scope": ["*"]})
    assert codes_of([consent, SAMPLES["withdrawal"]]) == [(), ()]
    other = item("consent", "C/9", {**patient(B), "scope": ["*"]})
    assert codes_of([other, SAMPLES["withdrawal"]]) == [(), ("consent.unknown",)]
    assert codes_of([SAMPLES["withdrawal"]]) == [("consent.unknown",)]
    # A confirmation is the patient portal's: the sender's registered level decides.
    assert codes_of([consent, SAMPLES["confirmation"]]) == [
        (),
        ("consent_confirmation.portal_only",),
    ]


def test_referrals_depend_on_the_institutions_and_the_referral_held() -> None:
    assert codes_of([SAMPLES["referral"]]) == [
        ("referral.unknown_institution", "referral.same_level", "referral.direction")
    ]
    assert codes_of([SAMPLES["to_self"]]) == [("referral.to_self",)]
    (action,) = codes_of([SAMPLES["action"]])
    assert "referral.unknown" in action and "referral.transition" in action


def test_a_merge_of_a_patient_the_run_names_earlier_depends_only_on_who_they_are() -> None:
    (alone,) = codes_of([SAMPLES["merge"]])
    assert alone == ("patient.unknown", "merge.into_temporary")
    known = item("patient", "P/77", {"patient": {"mrn": "M-77"}})
    assert codes_of([known, SAMPLES["merge"]]) == [(), ("merge.into_temporary",)]


def test_a_source_id_sent_twice_in_a_run_depends_on_the_first_unless_it_is_a_repeat() -> None:
    state = RunState(HERE)
    first = condition("Condition/1")
    assert depends(first, state, submission="s1", file="a.hl7") is None
    assert depends(first, state, submission="s1", file="b.hl7") is None  # same submission
    again = depends(first, state, submission="s2", file="c.hl7")
    assert again is not None and again.codes == ("item.source_id_held",)
    assert "a.hl7" in again.reason and str(again).startswith("item Condition/1 (condition): ")


def test_every_ledger_check_is_named() -> None:
    # Each refusal the gateway makes by what the ledger holds (domain/services, the referral
    # transitions, the gateway's and the ledger's own) is named by the dry run: for the items
    # it applies to, or once for every item. A new check fails this until the dry run names it.
    def codes_in(path: str, pattern: str) -> set[str]:
        return set(re.findall(pattern, (ROOT / path).read_text(), flags=re.S))

    refusals = r'refusal\(\s*"([a-z_.]+)"'
    ledger = (
        set().union(
            *(codes_in(f"domain/services/{m}.py", refusals) for m in ("submissions", "referrals"))
        )
        | codes_in("domain/services/identity.py", refusals)
        | codes_in("domain/referral.py", r'code="([a-z_.]+)"')
        | codes_in("exchange/ingest/ledger.py", r'Problem\(\s*"([a-z_.]+)"')
        | codes_in("exchange/ingest/gateway.py", r'Problem\(\s*"([a-z_.]+)"')
        | codes_in("exchange/ingest/checks.py", r'Problem\(\s*"([a-z_.]+)"')
    )
    # Not the ledger's: the envelope's own bytes (the CLI builds them), the exchange failing,
    # the referral timer's own steps (no institution sends them).
    not_ledger = {
        "envelope.not_json",
        "envelope.too_deep",
        "envelope.not_object",
        "sender.mismatch",
        "gateway.internal_error",
        "referral.not_due",
    }
    named = {c for s in ALWAYS for c in s.codes} | {
        code for sample in SAMPLES.values() for codes in codes_of([sample]) for code in codes
    }
    assert len(ledger) > 20  # the patterns still find the checks
    assert ledger - not_ledger - named == set()
