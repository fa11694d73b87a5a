"""The CSV adapter never raises: arbitrary bytes, a visit export with any cell replaced and
arbitrary cells under the sample header become items or problems, never an exception."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.clinical import Item, parse_payload
from tests.unit.csv_samples import (
    EXPECTED,
    VISITS,
    assert_no_patient_data,
    encoded,
    read,
    table,
)

# Nothing an export can hold makes the adapter raise -------------------------------------------


def assert_valid(items: list[dict[str, Any]]) -> None:
    for item in items:
        Item.model_validate(item)
        parse_payload(item["kind"], item["payload"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(EXPECTED)))
def test_arbitrary_bytes_become_problems_not_exceptions(raw: bytes, name: str) -> None:
    report = read(name, raw)
    assert report.problems and report.items == []


VISIT_ROWS = table(VISITS)
cells = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # GB18030 writes all


@settings(max_examples=300, deadline=None)
@given(st.integers(1, len(VISIT_ROWS) - 1), st.integers(0, len(VISIT_ROWS[0]) - 1), cells)
def test_a_visit_export_with_any_one_cell_replaced_never_raises(
    row: int, column: int, text: str
) -> None:
    rows = [list(r) for r in VISIT_ROWS]
    rows[row][column] = text
    report = read(VISITS, encoded(rows))
    assert report.items or report.problems
    assert_valid(report.items)
    # At most the one row is lost; the others map as before.
    assert len(report.items) >= sum(EXPECTED[VISITS].values()) - 5
    assert_no_patient_data(report)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, max_size=12), max_size=6))
def test_arbitrary_cells_under_the_sample_header_never_raise(rows: list[list[str]]) -> None:
    report = read(VISITS, encoded([VISIT_ROWS[0], *rows]))
    assert_valid(report.items)
    assert_no_patient_data(report)
    assert report.items or report.problems or all(not "".join(r).strip() for r in rows)
