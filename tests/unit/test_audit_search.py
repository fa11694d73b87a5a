"""Regulator search parameters become a SQL condition, or a refusal naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from audit.search import SearchError, parse_search


def test_parameters_become_conditions_with_bound_values() -> None:
    q = parse_search(
        {
            "patient": ["Patient/8c1f3a52-0f7e-4c55-9d0b-3f7c1b2a9e10"],
            "agent": ["doctor-1"],
            "outcome": ["4"],
            "break-glass": ["true"],
            "date": ["ge2026-11-01", "lt2026-11-02T08:00:00+08:00"],
            "_count": ["5000"],
        }
    )
    assert q.where == (
        "seq IN (SELECT seq FROM audit_log WHERE patient_id = $1 UNION ALL "
        "SELECT seq FROM audit_patients WHERE patient_id = $1) AND person = $2 AND "
        "recorded_at >= $3 AND "
        "recorded_at < $4 AND decision = ANY($5) AND break_glass = $6"
    )
    assert q.args[1:] == [
        "doctor-1",
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime.fromisoformat("2026-11-02T08:00:00+08:00"),
        ["deny", "rejected"],
        True,
    ]
    assert q.count == 1000  # capped


def test_a_plain_date_means_that_whole_day() -> None:
    q = parse_search({"date": ["2026-11-01"]})
    assert q.where == "recorded_at >= $1 AND recorded_at <= $2"
    assert q.args[0].hour == 0 and q.args[1].hour == 23


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"who": ["x"]}, "search.unknown"),
        ({"patient": ["not-a-uuid"]}, "search.patient"),
        ({"date": ["ge2026-11-01T08:00:00"]}, "search.date"),
        ({"outcome": ["2"]}, "search.outcome"),
        ({"break-glass": ["yes"]}, "search.break_glass"),
        ({"_count": ["0"]}, "search.paging"),
    ],
)
def test_each_bad_parameter_is_named(params: dict[str, list[str]], code: str) -> None:
    with pytest.raises(SearchError) as err:
        parse_search(params)
    assert err.value.code == code
