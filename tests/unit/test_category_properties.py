"""Data categories over random entries: one general category then known sensitive ones, more
codes never take a category away, and ICD-10 case and dot do not change the answer."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.categories import (
    GENERAL,
    SENSITIVE,
    categories_of,
)
from domain.clinical import ENTRY_KINDS
from tests.unit.category_builders import ATC, ICD10, LOCAL, LOINC, coding, diagnosis, entry

KNOWN_CODES = [
    coding(ICD10, "I10", "原发性高血压"),
    coding(ICD10, "B20.0"),
    coding(ICD10, "F32.9"),
    coding(ICD10, "O80"),
    coding(ICD10, "Q90.9"),
    coding(LOINC, "7918-6"),
    coding(LOINC, "2345-7", "葡萄糖"),
    coding(LOINC, "51968-6"),
    coding(ATC, "J05AF07"),
    coding(ATC, "N06AB03"),
    coding(ATC, "C08CA01"),
    coding(LOCAL, "X", "人工流产"),
]
short_text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)
random_codes = st.builds(
    coding,
    st.sampled_from([ICD10, LOINC, ATC, LOCAL, "http://snomed.info/sct"]),
    st.from_regex(r"[A-Za-z][0-9][0-9A-Za-z](\.[0-9A-Za-z]{1,4})?", fullmatch=True) | short_text,
    st.none() | short_text | st.sampled_from(["HIV抗体", "抑郁症", "染色体", "基因检测"]),
)
codings = st.lists(st.sampled_from(KNOWN_CODES) | random_codes, min_size=1, max_size=4)


@settings(max_examples=300)
@given(
    st.sampled_from(["patient", *ENTRY_KINDS]),
    codings,
    st.sampled_from(["laboratory", "vital-signs", "survey", None]),
)
def test_every_entry_gets_one_general_category_then_known_sensitive_ones(
    kind: str, codes: list[dict[str, Any]], category: str | None
) -> None:
    extra: dict[str, Any] = {}
    if kind == "encounter":
        extra["reason"] = codes
    if kind == "observation":
        extra["category"] = category
        if len(codes) > 1:
            extra["value_coding"] = codes[1]
    result = categories_of(kind, entry(kind, codes[0], **extra))
    assert result[0] in GENERAL
    assert all(c in SENSITIVE for c in result[1:])
    assert len(set(result)) == len(result)
    assert list(result[1:]) == [c for c in SENSITIVE if c in result]
    if kind == "patient":
        assert result == ("demographics",)


@given(codings, codings)
def test_more_codes_never_take_a_category_away(
    first: list[dict[str, Any]], more: list[dict[str, Any]]
) -> None:
    fewer = categories_of("encounter", entry("encounter", first[0], reason=first))
    both = categories_of("encounter", entry("encounter", first[0], reason=first + more))
    assert set(fewer) <= set(both)
    alone = categories_of("encounter", entry("encounter", more[0], reason=more))
    assert set(both) == set(fewer) | set(alone)


@given(st.sampled_from("ABFNOQRXZ"), st.integers(0, 99), st.text("0123456789", max_size=3))
def test_icd10_case_and_dot_do_not_change_the_answer(letter: str, number: int, rest: str) -> None:
    dotted = f"{letter}{number:02d}" + (f".{rest}" if rest else "")
    answers = {diagnosis(code) for code in (dotted, dotted.lower(), dotted.replace(".", ""))}
    assert len(answers) == 1
