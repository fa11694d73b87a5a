"""Nothing a sender can send makes the FHIR R4 adapter raise: arbitrary JSON and bytes, and a
visit or a chart with any one part replaced, give problems or valid items, never an exception."""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.fhir import read_fhir
from adapters.fhir_paths import FHIR_PATHS
from tests.unit.fhir_builders import (
    CHART_KINDS,
    DISCHARGE_SHA256,
    INSTITUTION,
    REGISTERED,
    assert_no_patient_data,
    assert_valid,
    chart,
    visit,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_arbitrary_json_objects_become_problems_not_exceptions(doc: dict[str, Any]) -> None:
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems or report.skipped
    assert report.items == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_become_problems_not_exceptions(raw: bytes) -> None:
    report = read_fhir(raw, institution=INSTITUTION)
    assert report.problems and report.items == []


def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, for the mutation tests below."""
    inner = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    return [at, *(p for key, child in inner for p in paths(child, (*at, key)))]


def mutated(doc: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return doc


# The element names a problem may use besides the sender's own: the FHIR paths mapped to.
FHIR_NAMES = {
    step
    for paths_of_kind in FHIR_PATHS.values()
    for path in paths_of_kind.values()
    for step in re.split(r"[.\[\] ]+", path)
} | {"x", "period", "effectivePeriod", "value", "identifier", "Bundle", "entry", "resource"}


def keys_of(node: Any) -> set[str]:
    """Every key the sender wrote, and each dot-separated part of one (a key ".at" shows in a
    path as "..at": the sender's own name, not a canonical field's)."""
    if isinstance(node, dict):
        own = set(map(str, node)) | {part for key in map(str, node) for part in key.split(".")}
        return own | {k for v in node.values() for k in keys_of(v)}
    if isinstance(node, list):
        return {k for v in node for k in keys_of(v)}
    return set()


TRANSLATED = {k for paths in FHIR_PATHS.values() for k, v in paths.items() if k != v.split()[0]}


def assert_in_fhir_terms(report: Any, doc: dict[str, Any]) -> None:
    """Problems name FHIR paths — the sender's own element names or the FHIR elements the
    canonical fields come from, never a canonical field name — and the rule in the exchange's
    words, never a validation library's."""
    canonical = TRANSLATED - FHIR_NAMES - keys_of(doc)
    for p in report.problems:
        leaked = {n for n in canonical if re.search(rf"\.{n}(\.|\[|$)", p.field)}
        assert not leaked and ".root" not in p.field, p.field
        assert not any(
            words in p.message for words in ("Input should", "Field required", "validation error")
        ), p.message


VISIT_PATHS = paths(visit())[1:]
CHART_PATHS = paths(chart())[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VISIT_PATHS), json_values)
@example(("entry", 3, "resource", "interpretation", 0), {".at": None})  # a key with a dot
def test_a_visit_with_any_one_part_replaced_never_raises_and_items_stay_valid(
    where: tuple[Any, ...], value: Any
) -> None:
    doc = mutated(visit(), where, value)
    report = read_fhir(doc, institution=INSTITUTION)
    assert_valid(report.items)
    assert len(report.items) <= 4
    assert_no_patient_data(report)
    assert_in_fhir_terms(report, doc)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CHART_PATHS), json_values)
def test_a_chart_with_any_one_part_replaced_never_raises_and_items_stay_valid(
    where: tuple[Any, ...], value: Any
) -> None:
    # Every new resource type, its references, contained resources and document content.
    doc = mutated(chart(), where, value)
    report = read_fhir(doc, institution=INSTITUTION, institutions=REGISTERED)
    assert_valid(report.items)
    assert len(report.items) <= len(CHART_KINDS)
    assert_no_patient_data(report)
    assert_in_fhir_terms(report, doc)
    assert all(DISCHARGE_SHA256 not in str(p) for p in report.problems)
