"""Visits without a visit number (PV1-19), and birth dates: a visit's derived record is the
same for every message about it and different for different visits; a birth date outside
1880…today is refused by name."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7v2 import read_hl7v2
from tests.unit.hl7v2_messages import (
    INSTITUTION,
    RID,
    admission,
    assert_no_patient_data,
    by_kind,
    pv1,
)


def visit(event: str = "A04", control: str = "C1", **fields: str) -> dict[str, Any]:
    """The encounter item of one ADT message (fields as ``admission`` takes them)."""
    report = read_hl7v2(admission(event, control, **fields), institution=INSTITUTION)
    assert report.problems == [], report.problems
    [encounter] = by_kind(report)["encounter"]
    return encounter


def pid(mrn: str = "MR000123") -> str:
    return f"PID|1||{RID}^^^CHN^NNCHN~{mrn}^^^DCTHC^MR||王^秀英||19560402|F"


def test_an_outpatient_registration_without_a_visit_number_keeps_its_visit() -> None:
    # A township centre registers an outpatient (A04) and sends no PV1-19.
    report = read_hl7v2(
        admission("A04", pv1=pv1("O", "", "20260302091000")), institution=INSTITUTION
    )
    assert report.problems == []
    [encounter] = by_kind(report)["encounter"]
    assert encounter["record"].startswith("enc:derived:")
    assert encounter["payload"]["start"] == "2026-03-02T09:10:00+08:00"
    # The diagnosis of the visit names it, as it would name a visit number.
    [condition] = by_kind(report)["condition"]
    assert condition["payload"]["encounter"] == encounter["record"]
    # The record id says nothing about the patient: a digest, not the MRN or resident ID.
    assert "MR000123" not in encounter["record"] and RID not in encounter["record"]


def test_the_discharge_continues_the_admission_it_ends() -> None:
    # Admitted (A01) without a visit number; the admit time is PV1-44.
    admitted = visit("A01", "C1", pv1=pv1("I", "", "20260302091000"))
    # Discharged a week later (A03): PV1-44 again, to the minute this time, and PV1-45.
    discharged = visit("A03", "C2", pv1=pv1("I", "", "202603020910", "20260309100000"))
    assert discharged["record"] == admitted["record"]
    assert discharged["source_id"] != admitted["source_id"]
    assert discharged["payload"]["status"] == "finished"
    # And the A08 update between them, with the admit time written with its offset.
    updated = visit("A08", "C3", pv1=pv1("I", "", "20260302011000+0000"))
    assert updated["record"] == admitted["record"]


def test_an_admission_without_an_admit_time_is_dated_by_its_event() -> None:
    # No PV1-44: an A01's event time (EVN-2) is when the patient was admitted...
    admitted = visit("A01", "C1", pv1=pv1("I", ""))
    assert admitted["payload"]["start"] == "2026-03-02T09:15:00+08:00"
    # ...so the discharge that gives that admit time continues its record.
    discharged = visit("A03", "C2", pv1=pv1("I", "", "202603020915", "202603091000"))
    assert discharged["record"] == admitted["record"]


def test_a_resent_message_derives_the_same_record() -> None:
    once = visit("A04", "C1", pv1=pv1("O", "", "20260302091000"))
    again = visit("A04", "C1", pv1=pv1("O", "", "20260302091000"))
    assert once == again


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"pv1": pv1("O", "", "20260302093000")}, "another start"),
        ({"pv1": pv1("O", "", "20260303091000")}, "another day"),
        ({"pv1": pv1("E", "", "20260302091000")}, "another class"),
        ({"pv1": pv1("O", "", "20260302091000"), "pid": pid("MR000999")}, "another patient"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_different_visits_derive_different_records(fields: dict[str, str], why: str) -> None:
    first = visit("A04", "C1", pv1=pv1("O", "", "20260302091000"))
    other = visit("A04", "C2", **fields)
    assert other["record"] != first["record"], why


def test_a_visit_number_when_given_names_the_record() -> None:
    assert visit(pv1=pv1("O", "V77", "20260302091000"))["record"] == "enc:V77"


def test_a_pre_admission_may_be_undated_but_then_needs_its_visit_number() -> None:
    # An A05 with PV1-19 and no expected admit time yet: a planned visit without a start.
    planned = visit("A05", pv1=pv1("P", "V78"))
    assert planned["payload"]["status"] == "planned" and "start" not in planned["payload"]
    assert planned["payload"]["encounter_class"] == "pre-admission"
    # Without PV1-19 nothing names its record: refused, saying what would.
    report = read_hl7v2(admission("A05", pv1=pv1("P", "")), institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [("hl7.no_visit_number", "PV1-19")]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["MR1", "MR2"]),
            st.sampled_from(["I", "O", "E"]),
            st.datetimes(datetime(2020, 1, 1), datetime(2020, 1, 3)),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_records_are_equal_exactly_when_the_visits_are(
    visits: list[tuple[str, str, datetime]],
) -> None:
    # Two visits: the same patient, class and admit minute, or not. Seconds do not count.
    records = [
        visit(
            "A04",
            f"C{n}",
            pid=pid(mrn),
            pv1=pv1(klass, "", at.strftime("%Y%m%d%H%M%S")),
        )["record"]
        for n, (mrn, klass, at) in enumerate(visits)
    ]
    keys = [(mrn, klass, at.replace(second=0, microsecond=0)) for mrn, klass, at in visits]
    assert (records[0] == records[1]) == (keys[0] == keys[1])


# Birth dates (PID-7) ---------------------------------------------------------------------------

TODAY = date(2026, 3, 2)


def born(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    report = read_hl7v2(
        admission(pid=f"PID|1||MR000123^^^DCTHC^MR||王^秀英||{text}|F"),
        institution=INSTITUTION,
        today=TODAY,
    )
    assert_no_patient_data(report)
    return [(p.code, p.field) for p in report.problems], [i["kind"] for i in report.items]


@pytest.mark.parametrize(
    "text",
    ["10131113", "18791231", "20260303", (TODAY + timedelta(days=400)).strftime("%Y%m%d")],
    ids=["year-1013", "before-1880", "tomorrow", "next-year"],
)
def test_a_birth_date_outside_1880_to_today_is_refused(text: str) -> None:
    problems, kinds = born(text)
    assert problems == [("hl7.birth_date_out_of_range", "PID-7")]
    # The patient item is left out; the visit, diagnosis and allergy still go.
    assert kinds == ["encounter", "condition", "allergy"]


@pytest.mark.parametrize("text", ["18800101", "19560402", "20260302", "202603021130+0800"])
def test_a_birth_date_from_1880_to_today_is_taken(text: str) -> None:
    problems, kinds = born(text)
    assert problems == [] and kinds[0] == "patient"
