"""A refusal names the FHIR path the sender wrote and the rule in the exchange's words: never the
canonical field it maps to, never the validation library's wording, never the value."""

from __future__ import annotations

from adapters.fhir import read_fhir
from tests.unit.fhir_builders import (
    INSTITUTION,
    REGISTERED,
    bundle,
    medication,
    medication_request,
    observation,
    patient,
)


def test_a_dose_that_breaks_a_rule_is_named_where_fhir_keeps_it() -> None:
    long_unit = "片" * 200
    dose = [{"doseQuantity": {"value": 1, "unit": long_unit}}]
    rx = medication_request(
        dosageInstruction=[{"text": "每日一次", "doseAndRate": dose}],
    )
    report = read_fhir(
        bundle(patient(), medication(), rx), institution=INSTITUTION, institutions=REGISTERED
    )
    [problem] = report.problems
    assert problem.field == (
        "Bundle.entry[2].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.unit"
    )
    assert (problem.code, problem.message) == ("value.too_long", "must be at most 128 characters")
    assert long_unit not in str(problem)


def test_a_code_outside_the_value_set_names_the_codes_allowed() -> None:
    report = read_fhir(bundle(patient(), observation(status="bogus")), institution=INSTITUTION)
    [problem] = report.problems
    assert (problem.code, problem.field) == ("value.not_allowed", "Bundle.entry[1].resource.status")
    assert (
        problem.message.startswith("must be one of 'registered'") and "bogus" not in problem.message
    )


def test_a_structural_error_is_said_in_fhir_terms() -> None:
    report = read_fhir(bundle(patient(birthDate="1956-13-40")), institution=INSTITUTION)
    [problem] = report.problems
    assert problem.code.startswith("fhir.value.") and problem.field.endswith(".birthDate")
    assert "FHIR date" in problem.message and "1956" not in problem.message
