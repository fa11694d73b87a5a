"""GB 11643-1999 resident IDs: the check digit, the birth date, and messages without the number."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidResidentId
from domain.resident_id import check_character, make_resident_id, parse_resident_id
from tests.factories import resident_ids


def test_the_regulations_examples() -> None:
    rid = parse_resident_id("11010519491231002X")
    assert rid.birth_date == date(1949, 12, 31)
    assert rid.sex == "female"
    with pytest.raises(InvalidResidentId) as err:
        parse_resident_id("340524198001010013")
    assert err.value.code == "resident_id.check_digit"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("11010519491231002", "resident_id.length"),
        ("1101051949123100A2", "resident_id.digits"),
        ("11010519490231002X", "resident_id.birth_date"),  # 31 February
        ("11010518000101002Y", "resident_id.check_character"),
        (11010519491231002, "resident_id.type"),
    ],
)
def test_each_rule_has_its_code(raw: object, code: str) -> None:
    with pytest.raises(InvalidResidentId) as err:
        parse_resident_id(raw)
    assert err.value.code == code


def test_a_future_birth_date_is_refused_when_today_is_known() -> None:
    rid = make_resident_id("341122", date(2030, 1, 1), 1)
    assert parse_resident_id(rid).birth_date == date(2030, 1, 1)
    with pytest.raises(InvalidResidentId):
        parse_resident_id(rid, today=date(2026, 11, 23))


@given(resident_ids)
def test_made_ids_parse_and_never_leak(rid: str) -> None:
    assert parse_resident_id(rid.lower()).value == rid
    assert rid not in repr(parse_resident_id(rid))


@given(resident_ids, st.integers(min_value=0, max_value=16), st.integers(min_value=1, max_value=9))
def test_any_single_digit_change_is_caught(rid: str, place: int, delta: int) -> None:
    changed = rid[:place] + str((int(rid[place]) + delta) % 10) + rid[place + 1 :]
    try:
        parse_resident_id(changed)
    except InvalidResidentId as exc:
        assert changed not in str(exc) and rid not in str(exc)
    else:
        raise AssertionError("a single changed digit must fail the MOD 11-2 check")


def test_check_character_examples() -> None:
    assert check_character("11010519491231002") == "X"
