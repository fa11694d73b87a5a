"""The physician's record page arranges the Bundle as the IPS summary says: a section the
decision withholds, one nobody sent, and one recorded as "none known" each say which it is;
the timeline's filters narrow and never fail; a lab test's trend is drawn to scale; the record
"as it stood" takes only an instant that has passed; and a rendered record page leaves nothing
for the cycle collector."""

from __future__ import annotations

import gc
import json
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.requests import Request

from exchange.api.access import Answer, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused, fhir_response
from exchange.auth.tokens import Identity
from exchange.pages.physician import PhysicianPages
from exchange.pages.physician_as_of import instant_of
from exchange.pages.physician_chart import chart
from exchange.pages.physician_record import (
    SUBMITTED_BY,
    Filters,
    lab_tests,
    row_of,
    summary,
    withheld_categories,
)

INSTITUTIONS = {"county-hospital": ("青溪县人民医院", "county_hospital")}


def sent(resource: dict[str, Any], by: str = "county-hospital") -> dict[str, Any]:
    ref = {"identifier": {"value": by}, "display": by}
    return {**resource, "extension": [{"url": SUBMITTED_BY, "valueReference": ref}]}


def lab(code: str, value: float, when: str) -> dict[str, Any]:
    return sent(
        {
            "resourceType": "Observation",
            "category": [{"coding": [{"code": "laboratory"}]}],
            "code": {"coding": [{"code": code, "display": "空腹血糖"}]},
            "valueQuantity": {"value": value, "unit": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.9}, "high": {"value": 6.1}}],
            "effectiveDateTime": when,
        }
    )


def states(resources: list[dict[str, Any]]) -> dict[str, str]:
    rows = [row_of(r, INSTITUTIONS) for r in resources if r["resourceType"] != "OperationOutcome"]
    withheld, cut = withheld_categories(resources)
    return {s.key: s.state for s in summary(rows, withheld, cut)}


def test_withheld_not_provided_and_none_known_are_three_different_states() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"diagnostics": "categories: medication,lab", "details": {"text": "x"}}],
    }
    none_known = sent(
        {"resourceType": "AllergyIntolerance", "code": {"coding": [{"code": "716186003"}]}}
    )
    problem = sent({"resourceType": "Condition", "code": {"text": "原发性高血压"}})
    vital = sent(
        {
            "resourceType": "Observation",
            "category": [{"coding": [{"code": "vital-signs"}]}],
            "code": {"text": "收缩压"},
        }
    )
    found = states([outcome, none_known, problem, vital])
    assert found == {
        "problems": "shown",
        "medications": "withheld",
        "allergies": "none-known",
        "immunizations": "not-provided",
        "results": "partly-withheld",  # vitals shown, labs withheld
    }


def test_a_row_carries_its_institutions_name_and_level() -> None:
    row = row_of(lab("1558-6", 7.1, "2026-03-01T08:00:00+08:00"), INSTITUTIONS)
    assert (row.institution_name, row.level, row.category) == (
        "青溪县人民医院",
        "county_hospital",
        "lab",
    )
    unknown = row_of(lab("1558-6", 7.1, "2026-03-01"), {})
    assert (unknown.institution_name, unknown.level) == ("county-hospital", "")


def test_filters_ignore_what_they_do_not_know_and_narrow_by_day() -> None:
    filters = Filters.of(
        {"category": "<script>", "institution": "nowhere", "since": "2026-02", "until": "x"},
        {"lab"},
        {"county-hospital"},
    )
    assert filters == Filters() and not filters.active
    by_day = Filters.of({"category": "lab", "since": "2026-03-01"}, {"lab"}, set())
    row = row_of(lab("1558-6", 7.1, "2026-03-01T08:00:00+08:00"), INSTITUTIONS)
    assert by_day.keep(row, "2026-03-01") and not by_day.keep(row, "2026-02-28")


def test_a_trend_is_drawn_to_scale_oldest_first() -> None:
    rows = [
        row_of(lab("1558-6", v, f"2026-0{m}-01T08:00:00+08:00"), INSTITUTIONS)
        for m, v in ((3, 9.0), (1, 6.0), (2, 7.5))
    ]
    test = lab_tests(rows)["1558-6"]
    drawn = chart(test)
    assert drawn is not None
    assert [p.value for p in drawn.points] == [6.0, 7.5, 9.0]
    xs, ys = [p.x for p in drawn.points], [p.y for p in drawn.points]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # higher values drawn higher
    # Equal steps in value are equal steps on the page.
    assert abs((ys[0] - ys[1]) - (ys[1] - ys[2])) < 0.2
    assert drawn.band is not None and drawn.band[1] > 0  # the reference range is shaded


def test_as_it_stood_takes_only_an_instant_that_has_passed() -> None:
    now = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)  # 12:00 in Beijing
    assert instant_of("2026-06-01", "11:30", now) == datetime(2026, 6, 1, 3, 30, tzinfo=UTC)
    assert instant_of("2026-06-01", "", now) == now  # today without a time: now
    for day, time in (("2026-06-01", "12:30"), ("2026-13-01", ""), ("", ""), ("x", "y")):
        with pytest.raises(Refused) as refused:
            instant_of(day, time, now)
        assert refused.value.code == "page.at"


def finished(step: Coroutine[Any, Any, Answer]) -> Answer:
    """A handler's coroutine run to its end without an event loop (whose own bookkeeping the
    collector would find): every await below it completes at once."""
    try:
        step.send(None)
    except StopIteration as done:
        return cast(Answer, done.value)
    raise AssertionError("the handler waited on something")


def test_a_record_page_is_freed_as_its_request_ends_without_the_cycle_collector() -> None:
    """The page's Bundle, rows and template context must go by reference counting when the
    request is done. Kept alive by a reference cycle (a macro in the template holds the render
    context), every page left thousands of objects for the collector, whose passes over them
    set bench/read.py's record-page tail (p99 70-90 ms at 20/s against 13 ms at p50)."""
    entries = [
        {"resource": lab("1558-6", 5.0 + n / 10, f"2026-03-{n % 28 + 1:02d}T08:00:00+08:00")}
        for n in range(60)
    ]
    body = {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    async def everything(call: Call) -> Answer:
        return Answer(fhir_response(json.dumps(body).encode()))

    async def institutions() -> dict[str, tuple[str, str]]:
        return INSTITUTIONS

    ctx = SimpleNamespace(page_key=b"k" * 32, records=SimpleNamespace(institutions=institutions))
    pages = PhysicianPages(cast(ApiContext, ctx))
    pages.record_api = everything
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    who = Identity("dr-li", "county-hospital", "physician", now + timedelta(hours=8), "t-1")
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("hie.example", 80),
        "path": "/app/patients/p-1",
        "path_params": {"pid": "p-1"},
        "query_string": b"",
        "headers": [(b"cookie", b"hie_session=tok-1")],
    }

    def record() -> bytes:
        call = Call(Request(scope), "r-1", "page.record", who, "TREAT", now)
        return bytes(finished(pages.record(call)).response.body)

    assert "空腹血糖".encode() in record()  # the template and its catalog are loaded once, first
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        html = record()
        left = gc.collect()
    finally:
        if was:
            gc.enable()
    assert "空腹血糖".encode() in html and b"badge level-county_hospital" in html
    assert left == 0, f"a record page left {left} objects in reference cycles"
