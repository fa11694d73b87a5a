"""The disclosure rule (audit/disclosure.py): list a few, count, type and digest many."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.disclosure import LISTED, agrees, digest, resource_types, summary, summary_of

lines = st.lists(
    st.builds(
        lambda t, i: f"{t}/{i}",
        st.sampled_from(["Observation", "Condition", "Encounter", "Patient", "观察"]),
        st.uuids(),
    ),
    max_size=60,
    unique=True,
)


def test_up_to_listed_resources_are_listed_in_the_order_given() -> None:
    few = ["Observation/b", "Condition/a"]
    assert summary(few) == {
        "disclosed": few,
        "resource_types": ["Condition", "Observation"],
        "disclosed_count": 2,
    }
    assert summary([]) == {"disclosed": [], "resource_types": [], "disclosed_count": 0}
    assert "disclosed_sha256" not in summary([f"Observation/{i}" for i in range(LISTED)])


def test_more_than_listed_are_counted_typed_and_digested() -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 1)]
    expected = hashlib.sha256("\n".join(sorted(many)).encode()).hexdigest()
    assert summary(many) == {
        "disclosed": [],
        "disclosed_count": LISTED + 1,
        "resource_types": ["Observation"],
        "disclosed_sha256": expected,
    }


def test_a_line_without_a_type_names_no_resource_type() -> None:
    assert resource_types(["12 records", "AuditEvent/3"]) == ["AuditEvent"]


def test_the_digest_is_of_the_sorted_lines_in_code_point_order() -> None:
    # Code-point order is PostgreSQL's COLLATE "C" on UTF-8 text: "Z" < "a" < "观".
    assert (
        digest(["观/1", "a/1", "Z/1"])
        == hashlib.sha256(b"Z/1\na/1\n" + "观/1".encode()).hexdigest()
    )


@given(lines)
def test_a_page_summarised_elsewhere_is_summarised_the_same(found: list[str]) -> None:
    few = len(found) <= LISTED
    assert summary_of(
        len(found), resource_types(found), sorted(found) if few else None, digest(found)
    ) == summary(sorted(found))
    assert agrees(summary(found), list(reversed(found)))


def test_a_page_that_breaks_the_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        summary_of(3, ["Observation"], ["Observation/1"], None)
    with pytest.raises(ValueError):
        summary_of(LISTED + 1, ["Observation"], None, None)


def test_a_rebuilt_list_agrees_only_with_what_was_recorded() -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 5)]
    assert agrees(summary(many), many[::-1])
    assert not agrees(summary(many), many[:-1])
    assert not agrees(summary(["Condition/1"]), ["Condition/2"])
    assert agrees(summary([]), [])
