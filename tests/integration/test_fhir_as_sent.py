"""What a FHIR sender wrote reaches a physician as written: times at the precision sent, a
planned home visit with no period, an observation over a period with a unitless value, a
Consent mapped to the exchange's consent. Through the real gateway, ledger and projection."""

from __future__ import annotations

from typing import Any

from adapters.fhir import read_fhir
from tests.integration.conftest import Running
from tests.integration.record_steps import record_by_type
from tests.integration.test_walking_skeleton import submit
from tests.unit.fhir_builders import INSTITUTION, RID, bundle, encounter, observation, patient
from tests.unit.test_fhir_consent import consent
from tests.unit.test_fhir_times import immunization


def own_consent() -> dict[str, Any]:
    """The patient's consent to the centre's own reads for treatment, of every general
    category."""
    mine = consent()
    mine["provision"]["actor"] = mine["provision"]["actor"][:1]
    del mine["provision"]["securityLabel"]  # every general category
    return mine


def fhir_items() -> list[dict[str, Any]]:
    planned = encounter(id="e2", status="planned", period=None, **{"class": {"code": "HH"}})
    ph = observation(
        id="o2",
        effectiveDateTime=None,
        effectivePeriod={"start": "2026-03-02T08:00:00", "end": "2026-03-03"},
        valueQuantity={"value": 7.35},
    )
    doc = bundle(
        patient(),
        encounter(),  # the visit that gives the township centre its care relationship
        {k: v for k, v in planned.items() if v is not None},
        {k: v for k, v in ph.items() if v is not None},
        immunization("2016-08"),
        own_consent(),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == []
    return report.items


async def test_a_fhir_record_reads_back_as_it_was_sent(exchange: Running) -> None:
    # A township centre sends its FHIR bundle, mapped by the adapter as a sender would.
    await exchange.register(INSTITUTION, "township_health_centre", "东城镇卫生院")
    await exchange.register("county-hospital", "county_hospital", "县人民医院")
    receipt = await submit(exchange, INSTITUTION, fhir_items())
    assert receipt["status"] == "accepted", receipt
    await exchange.settle()

    # Its own physician reads the record (the consent covers the centre, the visit is theirs).
    by_type = await record_by_type(exchange, INSTITUTION, "doctor-li", RID)

    # The vaccine given "in August 2016" is still August 2016.
    assert [i["occurrenceDateTime"] for i in by_type["Immunization"]] == ["2016-08"]
    # The planned home visit has its class and no period; the finished visit keeps its times.
    visits = {e["status"]: e for e in by_type["Encounter"]}
    assert visits["planned"]["class"]["code"] == "HH" and "period" not in visits["planned"]
    assert visits["finished"]["period"]["start"] == "2026-03-02T09:10:00+08:00"
    # The pH over a period, read in the centre's time zone, with no unit.
    ph = next(o for o in by_type["Observation"] if "effectivePeriod" in o)
    assert ph["effectivePeriod"] == {"start": "2026-03-02T08:00:00+08:00", "end": "2026-03-03"}
    assert ph["valueQuantity"] == {"value": 7.35}
