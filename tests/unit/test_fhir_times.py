"""FHIR as the standard allows it: dates of any precision kept as sent, local times read in the
institution's time zone, every Encounter class and effective[x] form, unitless quantities.
Each is mapped by the adapter, accepted by the canonical model and rendered back by the
projection as it was sent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from adapters.fhir import read_fhir
from domain.clinical import parse_payload
from domain.times import ClinicalTime
from projections.render import render
from tests.unit.fhir_builders import INSTITUTION, bundle, condition, encounter, observation, patient

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def mapped(*resources: dict[str, Any], **options: Any) -> tuple[list[dict[str, Any]], Any]:
    report = read_fhir(bundle(patient(), *resources), institution=INSTITUTION, **options)
    return report.items[1:], report


def rendered(item: dict[str, Any]) -> dict[str, Any]:
    """The FHIR resource the projection writes for a mapped item."""
    return render(
        item["kind"],
        parse_payload(item["kind"], item["payload"]),
        resource_id=uuid4(),
        patient_id=uuid4(),
        institution=INSTITUTION,
        institution_name="东城镇卫生院",
    )


def immunization(when: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "urn:uuid:pat-1"},
        "occurrenceDateTime": when,
    }


@st.composite
def fhir_dates(draw: st.DrawFn) -> str:
    """Any FHIR date or dateTime: a year, a month, a day, or an instant with an offset."""
    day = draw(st.dates(min_value=date(1880, 1, 1), max_value=date(2100, 12, 31)))
    precision = draw(st.sampled_from(["year", "month", "day", "instant"]))
    if precision == "year":
        return f"{day.year:04d}"
    if precision == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if precision == "day":
        return day.isoformat()
    seconds = draw(st.integers(0, 86_399))
    offset = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60)) // 15 * 15))
    at = datetime(day.year, day.month, day.day, tzinfo=offset) + timedelta(seconds=seconds)
    return at.isoformat()


@given(fhir_dates())
def test_any_fhir_date_of_any_precision_round_trips(when: str) -> None:
    # A vaccine given at any precision maps, is accepted, and renders back as it was sent.
    items, report = mapped(immunization(when))
    assert report.problems == []
    assert items[0]["payload"]["occurrence"] == when
    assert rendered(items[0])["occurrenceDateTime"] == when


def test_reduced_precision_dates_are_kept_in_every_field_that_takes_them() -> None:
    # Dates as Synthea and HIS exports send them: a day, a month, a year.
    request = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "urn:oid:2.16.156", "code": "X1"}]},
        "subject": {"reference": "urn:uuid:pat-1"},
        "authoredOn": "2016-08-18",
    }
    sick = condition(onsetDateTime="2016-08", recordedDate="2016")
    items, report = mapped(request, sick)
    assert report.problems == []
    by_kind = {i["kind"]: i for i in items}
    assert rendered(by_kind["medication_request"])["authoredOn"] == "2016-08-18"
    out = rendered(by_kind["condition"])
    assert (out["onsetDateTime"], out["recordedDate"]) == ("2016-08", "2016")


def test_a_local_time_is_read_in_the_institutions_time_zone() -> None:
    # An HIS writes its own clock's time with no offset: Asia/Shanghai unless told otherwise.
    local = observation(effectiveDateTime="2026-03-02T09:25:00")
    items, report = mapped(local)
    assert report.problems == []
    assert items[0]["payload"]["effective"] == "2026-03-02T09:25:00+08:00"
    # ... and in the zone the institution's policy names.
    items, _ = mapped(local, zone=timezone(timedelta(hours=6)))
    assert items[0]["payload"]["effective"] == "2026-03-02T09:25:00+06:00"
    # A time of the 1986-1991 summers reads with China's daylight-saving offset of then.
    items, _ = mapped(observation(effectiveDateTime="1988-07-01T12:00:00"))
    assert items[0]["payload"]["effective"] == "1988-07-01T12:00:00+09:00"


def test_a_time_that_is_no_date_is_refused_with_its_fhir_path() -> None:
    _, report = mapped(observation(effectiveDateTime="2016-02-30"))
    assert [p.field for p in report.problems] == ["Bundle.entry[1].resource.effectiveDateTime"]


def test_every_encounter_class_of_the_r4_binding_maps_and_renders_back() -> None:
    for code in ("AMB", "IMP", "EMER", "HH", "FLD", "OBSENC", "PRENC", "SS", "VR"):
        items, report = mapped(encounter(**{"class": {"system": ACT_CODE, "code": code}}))
        assert report.problems == [], code
        assert rendered(items[0])["class"]["code"] == code


def test_an_encounter_without_a_period_maps_when_it_has_not_happened() -> None:
    # A planned home visit (HH) has no period yet.
    planned = encounter(status="planned", period=None, **{"class": {"code": "HH"}})
    items, report = mapped({k: v for k, v in planned.items() if v is not None})
    assert report.problems == []
    out = rendered(items[0])
    assert "period" not in out and out["status"] == "planned"
    # A finished visit must say when it began.
    finished = {k: v for k, v in encounter(period=None).items() if v is not None}
    _, report = mapped(finished)
    assert [p.code for p in report.problems] == ["encounter.start_missing"]


def test_an_end_at_a_coarser_precision_than_its_start_is_not_before_it() -> None:
    items, report = mapped(
        encounter(period={"start": "2026-03-02T09:10:00+08:00", "end": "2026-03"})
    )
    assert report.problems == []
    assert rendered(items[0])["period"] == {"start": "2026-03-02T09:10:00+08:00", "end": "2026-03"}
    _, report = mapped(encounter(period={"start": "2026-03-02T09:10:00+08:00", "end": "2026-02"}))
    assert [p.code for p in report.problems] == ["encounter.end_before_start"]


def test_every_effective_form_of_an_observation_maps() -> None:
    base = {"effectiveDateTime": None}
    forms = {
        "effectivePeriod": (
            {"effectivePeriod": {"start": "2026-03-02T08:00:00+08:00", "end": "2026-03-03"}},
            {"effectivePeriod": {"start": "2026-03-02T08:00:00+08:00", "end": "2026-03-03"}},
        ),
        "effectiveInstant": (
            {"effectiveInstant": "2026-03-02T08:00:00.250+08:00"},
            {"effectiveDateTime": "2026-03-02T08:00:00.250000+08:00"},
        ),
        "effectiveTiming": (
            {"effectiveTiming": {"event": ["2026-03-04", "2026-03-02"]}},
            {"effectiveDateTime": "2026-03-02"},
        ),
        "issued": (
            {"issued": "2026-03-02T10:00:00+08:00"},
            {"issued": "2026-03-02T10:00:00+08:00"},
        ),
    }
    for name, (given_, expected) in forms.items():
        resource = {k: v for k, v in observation(**base, **given_).items() if v is not None}
        items, report = mapped(resource)
        assert report.problems == [], name
        out = rendered(items[0])
        assert {k: out.get(k) for k in expected} == expected, name
    # No time at all: refused, in FHIR's words.
    bare = {k: v for k, v in observation(**base).items() if v is not None}
    _, report = mapped(bare)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.observation_time", "Bundle.entry[1].resource.effective[x]")
    ]


def test_a_quantity_without_a_unit_maps_as_fhir_allows_it() -> None:
    # A pH, an INR: a number with no unit.
    items, report = mapped(observation(valueQuantity={"value": 7.35}))
    assert report.problems == []
    assert rendered(items[0])["valueQuantity"] == {"value": 7.35}


def test_the_clinical_time_orders_spans_by_what_they_cover() -> None:
    day, month = ClinicalTime.parse("2016-08-18"), ClinicalTime.parse("2016-08")
    assert not month.before(day) and not day.before(month)
    assert ClinicalTime.parse("2016-07").before(day)
    assert ClinicalTime.parse("2016-08-18T10:00:00+08:00").earliest > day.earliest


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
        ),
    ),
    st.sampled_from(["iso", "z", "space", "millis"]),
)
def test_an_instant_reads_as_it_read_before_times_kept_their_precision(
    at: datetime, form: str
) -> None:
    # The ledger holds instants read as pydantic's aware datetimes: they must render the same.
    text = at.isoformat()
    if form == "z" and at.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    elif form == "space":
        text = text.replace("T", " ")
    elif form == "millis":
        text = at.isoformat(timespec="milliseconds")
    before = TypeAdapter(AwareDatetime).validate_python(text)
    assert ClinicalTime.parse(text).isoformat() == before.isoformat()
    assert ClinicalTime.parse(text).earliest == before
