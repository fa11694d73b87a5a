"""The disclosure rule (audit/disclosure.py): list a few, count, type and digest many, with the
audit log's hash (SHA-256 under the intl crypto profile, SM3 under gm) in the field that names
it; a rebuilt list is checked with the hash the record's field names."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.disclosure import (
    LISTED,
    agrees,
    check_rebuilt,
    digest,
    resource_types,
    summary,
    summary_of,
)

HASHES = ("sha256", "sm3")  # the intl and gm profiles' hash_name
OTHER = {"sha256": "sm3", "sm3": "sha256"}

lines = st.lists(
    st.builds(
        lambda t, i: f"{t}/{i}",
        st.sampled_from(["Observation", "Condition", "Encounter", "Patient", "观察"]),
        st.uuids(),
    ),
    max_size=60,
    unique=True,
)


@pytest.mark.parametrize("hash_name", HASHES)
def test_up_to_listed_resources_are_listed_in_the_order_given(hash_name: str) -> None:
    few = ["Observation/b", "Condition/a"]
    assert summary(few, hash_name) == {
        "disclosed": few,
        "resource_types": ["Condition", "Observation"],
        "disclosed_count": 2,
    }
    assert summary([], hash_name) == {
        "disclosed": [],
        "resource_types": [],
        "disclosed_count": 0,
    }
    listed = summary([f"Observation/{i}" for i in range(LISTED)], hash_name)
    assert not {"disclosed_sha256", "disclosed_sm3"} & set(listed)


def test_more_than_listed_are_counted_typed_and_digested_as_ever_under_intl() -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 1)]
    expected = hashlib.sha256("\n".join(sorted(many)).encode()).hexdigest()
    assert summary(many, "sha256") == {
        "disclosed": [],
        "disclosed_count": LISTED + 1,
        "resource_types": ["Observation"],
        "disclosed_sha256": expected,
    }


def test_more_than_listed_are_digested_with_sm3_under_gm_and_say_so() -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 1)]
    expected = hashlib.new("sm3", "\n".join(sorted(many)).encode()).hexdigest()
    assert summary(many, "sm3") == {
        "disclosed": [],
        "disclosed_count": LISTED + 1,
        "resource_types": ["Observation"],
        "disclosed_sm3": expected,
    }
    assert expected != digest(many, "sha256")


def test_a_line_without_a_type_names_no_resource_type() -> None:
    assert resource_types(["12 records", "AuditEvent/3"]) == ["AuditEvent"]


@pytest.mark.parametrize("hash_name", HASHES)
def test_the_digest_is_of_the_sorted_lines_in_code_point_order(hash_name: str) -> None:
    # Code-point order is PostgreSQL's COLLATE "C" on UTF-8 text: "Z" < "a" < "观".
    assert (
        digest(["观/1", "a/1", "Z/1"], hash_name)
        == hashlib.new(hash_name, b"Z/1\na/1\n" + "观/1".encode()).hexdigest()
    )


@given(lines, st.sampled_from(HASHES))
def test_a_page_summarised_elsewhere_is_summarised_the_same(
    found: list[str], hash_name: str
) -> None:
    few = len(found) <= LISTED
    assert summary_of(
        len(found),
        resource_types(found),
        sorted(found) if few else None,
        digest(found, hash_name),
        hash_name,
    ) == summary(sorted(found), hash_name)
    assert agrees(summary(found, hash_name), list(reversed(found)), hash_name)


def test_a_page_that_breaks_the_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        summary_of(3, ["Observation"], ["Observation/1"], None, "sha256")
    with pytest.raises(ValueError):
        summary_of(LISTED + 1, ["Observation"], None, None, "sm3")


@pytest.mark.parametrize("hash_name", HASHES)
def test_a_rebuilt_list_agrees_only_with_what_was_recorded(hash_name: str) -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 5)]
    assert agrees(summary(many, hash_name), many[::-1], hash_name)
    assert not agrees(summary(many, hash_name), many[:-1], hash_name)
    assert not agrees(summary(["Condition/1"], hash_name), ["Condition/2"], hash_name)
    assert agrees(summary([], hash_name), [], hash_name)
    assert check_rebuilt(summary(many, hash_name), many, hash_name) == {"matches_record": True}


@pytest.mark.parametrize("hash_name", HASHES)
def test_a_record_digested_with_the_other_profiles_hash_is_checked_with_it_and_reported(
    hash_name: str,
) -> None:
    many = [f"Observation/{i}" for i in range(LISTED + 5)]
    other = summary(many, OTHER[hash_name])  # a record of the other profile's hash
    checked = check_rebuilt(other, many[::-1], hash_name)
    assert checked["matches_record"]  # its digest is checked with the hash it names ...
    assert checked["finding"]["code"] == "audit.digest_hash"  # ... and it is reported
    assert f"disclosed_{OTHER[hash_name]}" in checked["finding"]["message"]
    assert hash_name in checked["finding"]["message"]
    changed = check_rebuilt(other, many[:-1], hash_name)
    assert not changed["matches_record"] and changed["finding"]["code"] == "audit.digest_hash"
