"""GB 11643-1999 resident IDs: the division, the check digit, the birth date, and messages
without the number; where a record's gender or birth date contradicts its number."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidResidentId
from domain.resident_id import (
    BIRTH_DATE_MISMATCH,
    SEX_MISMATCH,
    check_character,
    discrepancies,
    make_resident_id,
    parse_resident_id,
)
from tests.factories import genders, invented_provinces, resident_ids

# GB/T 2260's province-level divisions as the issue lists them (written out here, apart from
# the code's table, so that a code wrongly added to or left out of it fails).
REAL_PROVINCES = {
    f"{n:02d}"
    for n in [
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
        83,
    ]
}
BORN = date(1956, 4, 2)


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
        (make_resident_id("990105", date(1949, 12, 31), 2), "resident_id.division"),
        (11010519491231002, "resident_id.type"),
    ],
)
def test_each_rule_has_its_code(raw: object, code: str) -> None:
    with pytest.raises(InvalidResidentId) as err:
        parse_resident_id(raw, divisions=True)
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


@pytest.mark.parametrize("province", [f"{n:02d}" for n in range(100)])
def test_the_first_two_digits_must_name_a_province_level_division(province: str) -> None:
    rid = make_resident_id(f"{province}0102", BORN, 123)  # a right check digit either way
    if province in REAL_PROVINCES:
        assert parse_resident_id(rid, divisions=True).value == rid
        return
    with pytest.raises(InvalidResidentId) as err:
        parse_resident_id(rid, divisions=True)
    assert err.value.code == "resident_id.division"
    assert rid not in err.value.message
    # What the ledger accepted before the rule still reads (the rule is for what comes in).
    assert parse_resident_id(rid).value == rid


@given(
    invented_provinces,
    st.integers(0, 9999),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)),
    st.integers(0, 999),
)
def test_an_invented_division_is_refused_whatever_else_the_number_holds(
    province: str, county: int, born: date, sequence: int
) -> None:
    rid = make_resident_id(f"{province}{county:04d}", born, sequence)
    with pytest.raises(InvalidResidentId) as err:
        parse_resident_id(rid, divisions=True)
    assert err.value.code == "resident_id.division"
    assert rid not in str(err.value)


# Where a record contradicts its resident ID ---------------------------------------------------

FEMALE = make_resident_id("341122", BORN, 124)  # even sequence code
MALE = make_resident_id("341122", BORN, 125)  # odd


def test_a_record_that_agrees_with_its_id_has_no_discrepancy() -> None:
    assert discrepancies(FEMALE, gender="female", birth_date=BORN) == ()
    assert discrepancies(MALE, gender="male", birth_date=BORN) == ()


def test_the_sex_digit_and_the_birth_date_are_compared() -> None:
    assert discrepancies(FEMALE, gender="male", birth_date=BORN) == (SEX_MISMATCH,)
    assert discrepancies(MALE, gender="female", birth_date=BORN) == (SEX_MISMATCH,)
    assert discrepancies(MALE, gender="male", birth_date=date(1956, 4, 3)) == (BIRTH_DATE_MISMATCH,)
    assert discrepancies(FEMALE, gender="male", birth_date=date(1965, 4, 2)) == (
        SEX_MISMATCH,
        BIRTH_DATE_MISMATCH,
    )
    assert SEX_MISMATCH.field == "gender" and BIRTH_DATE_MISMATCH.field == "birth_date"


@pytest.mark.parametrize("gender", ["other", "unknown", None])
def test_a_gender_other_unknown_or_missing_contradicts_nothing(gender: str | None) -> None:
    assert discrepancies(MALE, gender=gender, birth_date=BORN) == ()
    assert discrepancies(FEMALE, gender=gender, birth_date=BORN) == ()


def test_a_missing_birth_date_or_id_contradicts_nothing() -> None:
    assert discrepancies(FEMALE, gender="female", birth_date=None) == ()
    assert discrepancies(None, gender="male", birth_date=BORN) == ()


def test_an_id_that_fails_its_own_checks_is_refused_by_them_not_compared() -> None:
    wrong_check = FEMALE[:17] + ("1" if FEMALE[17] != "1" else "2")
    assert discrepancies(wrong_check, gender="male", birth_date=date(2000, 1, 1)) == ()
    # One of an invented division the ledger took before that rule is compared all the same.
    invented = make_resident_id("990102", BORN, 124)
    assert discrepancies(invented, gender="male", birth_date=BORN) == (SEX_MISMATCH,)


@given(resident_ids, genders, st.one_of(st.none(), st.dates(date(1900, 1, 1), date(2030, 1, 1))))
def test_a_discrepancy_is_found_exactly_where_the_record_contradicts_its_id(
    rid: str, gender: str, born: date | None
) -> None:
    found = discrepancies(rid.lower(), gender=gender, birth_date=born)
    from_id = parse_resident_id(rid)
    sex_differs = gender in ("male", "female") and gender != from_id.sex
    date_differs = born is not None and born != from_id.birth_date
    assert (SEX_MISMATCH in found) == sex_differs
    assert (BIRTH_DATE_MISMATCH in found) == date_differs
    assert len(found) == sex_differs + date_differs
    for d in found:  # the messages name the rule and the field, never a value
        assert rid not in d.message and rid[6:14] not in d.message and rid[6:14] not in d.title
