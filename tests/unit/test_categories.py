"""Data categories at ingest: the base category of every kind, the sensitive classes by ICD-10
range edges, LOINC, ATC and labels, and code normalisation (the properties over random entries
are in test_category_properties). Every payload is a real model from parse_payload, with
synthetic data."""

from __future__ import annotations

import pytest

from domain.categories import (
    CATEGORIES,
    CONTROL_KINDS,
    GENERAL,
    LEVEL,
    SENSITIVE,
    categories_of,
    codes_in,
    sensitive_of,
)
from domain.clinical import CONTROL_KINDS as MODEL_CONTROL_KINDS
from domain.clinical import REFERRAL_KINDS, parse_payload
from domain.errors import DomainError
from tests.factories import consent_item
from tests.unit.category_builders import ATC, ICD10, LOCAL, LOINC, RID, coding, diagnosis, entry

# --- the base category of each kind --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "base"),
    [
        ("patient", "demographics"),
        ("encounter", "encounter"),
        ("condition", "diagnosis"),
        ("observation", "lab"),
        ("medication_request", "medication"),
        ("medication_dispense", "medication"),
        ("procedure", "procedure"),
        ("immunization", "immunization"),
        ("allergy", "allergy"),
        ("document", "document"),
    ],
)
def test_each_kind_has_its_base_category(kind: str, base: str) -> None:
    assert categories_of(kind, entry(kind)) == (base,)


@pytest.mark.parametrize(
    ("category", "base"),
    [
        ("laboratory", "lab"),
        ("vital-signs", "vital"),
        ("survey", "observation"),
        ("imaging", "observation"),
        (None, "observation"),
    ],
)
def test_an_observation_is_lab_vital_or_observation_by_its_category(
    category: str | None, base: str
) -> None:
    payload = entry("observation", coding(LOINC, "8480-6", "收缩压"), category=category)
    assert categories_of("observation", payload) == (base,)


def test_control_and_referral_kinds_have_no_categories() -> None:
    # Every kind the models know is either an entry with a base category or a control kind.
    assert set(CONTROL_KINDS) == (set(MODEL_CONTROL_KINDS) - {"patient"}) | set(REFERRAL_KINDS)
    consent = parse_payload("consent", consent_item(RID, "c-1")["payload"])
    assert categories_of("consent", consent) == ()
    for kind in CONTROL_KINDS:
        assert categories_of(kind, object()) == ()


def test_an_unknown_kind_is_an_error_not_an_empty_answer() -> None:
    with pytest.raises(DomainError) as err:
        categories_of("lab_panel", object())
    assert err.value.code == "categories.unknown_kind"


def test_every_category_has_a_level_and_the_sensitive_ones_are_the_highest() -> None:
    assert set(LEVEL) == set(CATEGORIES)
    assert all(1 <= level <= 4 for level in LEVEL.values())
    assert min(LEVEL[c] for c in SENSITIVE) > max(LEVEL[c] for c in GENERAL)


# --- ordinary entries stay ordinary --------------------------------------------------------


def test_hypertension_is_only_a_diagnosis() -> None:
    assert diagnosis("I10", display="原发性高血压") == ("diagnosis",)


def test_an_hiv_antibody_test_is_lab_and_hiv() -> None:
    payload = entry(
        "observation",
        coding(LOINC, "7918-6", "HIV1+2抗体"),
        value_coding=coding("http://snomed.info/sct", "260385009", "阴性"),
    )
    assert categories_of("observation", payload) == ("lab", "hiv")


# --- ICD-10: range edges, subcategories, what must not match -------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # HIV: B20-B24, Z21, R75 and a few subcategories.
        ("B20", ("hiv",)),
        ("B24", ("hiv",)),
        ("B19.9", ()),
        ("B25.0", ()),
        ("Z21", ("hiv",)),
        ("R75", ("hiv",)),
        ("R74.0", ()),
        ("R76", ()),
        ("Z71.7", ("hiv",)),
        ("Z71.6", ()),
        ("Z20.6", ("hiv",)),
        ("Z20.5", ()),
        ("Z11.4", ("hiv",)),
        ("O98.7", ("hiv", "reproductive")),
        ("O98.6", ("reproductive",)),
        # Psychiatric: F00-F99; intentional self-harm X60-X84.
        ("F00.0", ("psychiatric",)),
        ("F99", ("psychiatric",)),
        ("F32.9", ("psychiatric",)),
        ("G30.0", ()),
        ("E99", ()),
        ("X60", ("psychiatric",)),
        ("X84", ("psychiatric",)),
        ("X59", ()),
        ("X85", ()),
        # Reproductive: O00-O9A, Z30-Z39 and Z3A, N96-N98, N46.
        ("O00.1", ("reproductive",)),
        ("O99.8", ("reproductive",)),
        ("O9A.1", ("reproductive",)),
        ("O9B", ()),
        ("Z30.0", ("reproductive",)),
        ("Z39.2", ("reproductive",)),
        ("Z3A.20", ("reproductive",)),
        ("Z29", ()),
        ("Z40", ()),
        ("N95.1", ()),
        ("N96", ("reproductive",)),
        ("N98.1", ("reproductive",)),
        ("N99", ()),
        ("N46", ("reproductive",)),
        # Genetic: Q90-Q99, Z14, Z15, family history and antenatal findings.
        ("Q90.9", ("genetic",)),
        ("Q99.9", ("genetic",)),
        ("Q89.9", ()),
        ("R00", ()),
        ("Z14.1", ("genetic",)),
        ("Z15.01", ("genetic",)),
        ("Z13", ()),
        ("Z16", ()),
        ("Z84.81", ("genetic",)),
        ("Z84.8", ()),
        ("Z84.89", ()),
        ("O35.1", ("reproductive", "genetic")),
    ],
)
def test_icd10_ranges_and_their_edges(code: str, expected: tuple[str, ...]) -> None:
    assert diagnosis(code) == ("diagnosis", *expected)


@pytest.mark.parametrize("code", ["F32.9", "F329", "f32.9", " F32.9 ", "F32.900x001", "F32"])
def test_icd10_codes_are_normalised(code: str) -> None:
    assert diagnosis(code) == ("diagnosis", "psychiatric")


@pytest.mark.parametrize("code", ["F1", "F", "F1.0", "1F32", "FF32", "F.32", "F3.2", "-F32"])
def test_what_is_not_an_icd10_code_matches_nothing(code: str) -> None:
    assert diagnosis(code) == ("diagnosis",)


def test_b200_is_b20() -> None:
    assert diagnosis("B200") == ("diagnosis", "hiv")


@pytest.mark.parametrize(
    "system",
    [
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "ICD10",
        "http://example.cn/fhir/CodeSystem/ICD-10-CN",
        "urn:oid:2.16.840.1.113883.6.3",
        "urn:oid:2.16.156.10011.2.3.3.11",
        "2.16.156.10011.2.3.3.11.3",
        "GB/T 14396-2016",
    ],
)
def test_icd10_is_recognised_by_each_of_its_system_names(system: str) -> None:
    assert diagnosis("F20.0", system) == ("diagnosis", "psychiatric")


def test_icd10_ranges_do_not_apply_to_other_systems() -> None:
    # ICD-10-PCS procedure codes (B2... is cardiac imaging, F00... audiology) and local codes
    # that look like diagnosis codes mean nothing by themselves.
    assert diagnosis("B2000ZZ", "http://www.cms.gov/Medicare/Coding/ICD10-PCS") == ("diagnosis",)
    assert diagnosis("F00ZHYZ", "http://hl7.org/fhir/sid/icd-10-pcs") == ("diagnosis",)
    assert diagnosis("F20", LOCAL) == ("diagnosis",)


# --- LOINC ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("7917-8", ("hiv",)),
        ("68961-2", ("hiv",)),
        ("56888-1", ("hiv",)),
        ("25836-8", ("hiv",)),
        ("20447-9", ("hiv",)),
        ("51968-6", ("genetic",)),
        ("81247-9", ("genetic",)),
        ("69548-6", ("genetic",)),
        ("2345-7", ()),
        ("718-7", ()),
    ],
)
def test_loinc_tests(code: str, expected: tuple[str, ...]) -> None:
    payload = entry("observation", coding(LOINC, code, "检验项目"))
    assert categories_of("observation", payload) == ("lab", *expected)


def test_a_diagnosis_given_as_an_observations_value_counts() -> None:
    payload = entry(
        "observation",
        coding(LOCAL, "DX", "诊断"),
        category="exam",
        value_coding=coding(ICD10, "O80", "单胎顺产"),
    )
    assert categories_of("observation", payload) == ("observation", "reproductive")


# --- ATC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("J05AF07", ("hiv",)),  # tenofovir disoproxil: HIV and hepatitis B, kept HIV
        ("J05AF05", ("hiv",)),  # lamivudine: likewise
        ("J05AG03", ("hiv",)),  # efavirenz
        ("J05AJ03", ("hiv",)),  # dolutegravir
        ("J05AR03", ("hiv",)),  # tenofovir disoproxil and emtricitabine
        ("J05AE10", ("hiv",)),  # darunavir
        ("J05AX12", ("hiv",)),  # dolutegravir under its code before J05AJ
        ("J05AE30", ()),  # nirmatrelvir and ritonavir (COVID-19)
        ("J05AF10", ()),  # entecavir: hepatitis B only
        ("J05AB01", ()),  # aciclovir
        ("N05AH04", ("psychiatric",)),  # quetiapine
        ("N05AN01", ("psychiatric",)),  # lithium
        ("N06AB03", ("psychiatric",)),  # fluoxetine
        ("N06CA02", ("psychiatric",)),  # flupentixol and melitracen
        ("N06BA04", ("psychiatric",)),  # methylphenidate
        ("N07BC02", ("psychiatric",)),  # methadone for opioid dependence
        ("N05BA01", ()),  # diazepam: anxiolytics are left out, see the module
        ("N05CD04", ()),  # estazolam, a hypnotic
        ("N06BX03", ()),  # piracetam
        ("C08CA01", ()),  # amlodipine
        ("n06ab03", ("psychiatric",)),  # case does not matter
    ],
)
def test_atc_codes(code: str, expected: tuple[str, ...]) -> None:
    for kind in ("medication_request", "medication_dispense"):
        assert categories_of(kind, entry(kind, coding(ATC, code))) == ("medication", *expected)


def test_an_allergy_to_an_antiretroviral_reveals_hiv() -> None:
    payload = entry("allergy", coding(ATC, "J05AF06", "阿巴卡韦"))
    assert categories_of("allergy", payload) == ("allergy", "hiv")


# --- labels: code displays, departments, document titles ----------------------------------


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("艾滋病抗体初筛", ("hiv",)),
        ("抗HIV抗体", ("hiv",)),
        ("HIV-1 RNA定量", ("hiv",)),
        ("人类免疫缺陷病毒抗体", ("hiv",)),
        ("AIDS随访", ("hiv",)),
        ("荨麻疹 hives", ()),
        ("精神分裂症", ("psychiatric",)),
        ("抑郁状态", ("psychiatric",)),
        ("精神萎靡", ()),
        ("精神状态良好", ()),
        ("人工流产", ("reproductive",)),
        ("不孕症", ("reproductive",)),
        ("口服避孕药", ("reproductive",)),
        ("人工授精", ("reproductive",)),
        ("染色体核型分析", ("genetic",)),
        ("BRCA1基因突变检测", ("genetic",)),
        ("HPV基因分型", ()),
        ("结核分枝杆菌耐药基因检测", ()),
        ("血常规", ()),
    ],
)
def test_the_display_fallback_on_local_codes(display: str, expected: tuple[str, ...]) -> None:
    payload = entry("observation", coding(LOCAL, "L-1", display))
    assert categories_of("observation", payload) == ("lab", *expected)


def test_a_recombinant_vaccine_is_not_genetic_data() -> None:
    payload = entry("immunization", coding(LOCAL, "HepB", "乙肝疫苗(基因工程)"))
    assert categories_of("immunization", payload) == ("immunization",)


def test_a_procedure_named_in_its_display() -> None:
    payload = entry("procedure", coding(LOCAL, "66.2901", "输卵管结扎术"))
    assert categories_of("procedure", payload) == ("procedure", "reproductive")


def test_a_visit_to_the_psychiatric_department_is_psychiatric() -> None:
    payload = entry("encounter", coding(ICD10, "R51", "头痛"), department="精神科")
    assert categories_of("encounter", payload) == ("encounter", "psychiatric")


def test_a_document_is_read_by_its_type_and_its_title() -> None:
    by_type = entry("document", coding(LOINC, "51969-4", "基因检测报告"))
    assert categories_of("document", by_type) == ("document", "genetic")
    by_title = entry("document", coding(LOINC, "18842-5", "出院小结"), title="精神科出院小结")
    assert categories_of("document", by_title) == ("document", "psychiatric")


# --- several codes --------------------------------------------------------------------------


def test_sensitive_categories_come_in_their_order_without_duplicates() -> None:
    reasons = [
        coding(ICD10, "Q90.9"),
        coding(ICD10, "B20"),
        coding(ICD10, "F32.9"),
        coding(LOINC, "7918-6"),
        coding(ICD10, "I10"),
    ]
    payload = entry("encounter", reasons[0], reason=reasons)
    assert categories_of("encounter", payload) == ("encounter", "hiv", "psychiatric", "genetic")
    assert len(codes_in("encounter", payload)) == 5


def test_sensitive_of_reads_codes_outside_an_entry() -> None:
    # A referral's impression or diagnosis can be checked the same way.
    impression = parse_payload(
        "condition", {"patient": {"resident_id": RID}, "code": coding(ICD10, "F20.0", "精神分裂症")}
    )
    assert sensitive_of([impression.code]) == ("psychiatric",)
    assert sensitive_of([], ["艾滋病门诊"]) == ("hiv",)
    assert sensitive_of([]) == ()
