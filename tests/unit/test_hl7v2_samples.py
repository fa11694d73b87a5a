"""The HL7 v2 adapter over the Microsoft FHIR-Converter sample messages (US data, no resident
IDs): each maps or is refused precisely, and what chosen samples map to."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from adapters.hl7v2 import MAPPERS, read_hl7v2
from adapters.report import IngestReport, check_item
from tests.unit.hl7v2_messages import (
    ICD10,
    INSTITUTION,
    SAMPLE_FILES,
    SAMPLES,
    by_kind,
)

# The Microsoft FHIR-Converter samples (US data, no resident IDs; used as they are) ------------


def test_the_samples_are_present() -> None:
    assert len(SAMPLE_FILES) == 139, f"expected the HL7 v2 sample messages under {SAMPLES}"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_maps_or_is_refused_precisely(path: Path) -> None:
    report = read_hl7v2(path.read_bytes(), institution=INSTITUTION)
    assert report.items or report.problems
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []
        # US data: every patient goes by its MRN, never an invented resident ID.
        refs = [item["payload"]["patient"]] + (
            [item["payload"]["merged"]] if item["kind"] == "merge" else []
        )
        assert all("resident_id" not in ref and ref.get("mrn") for ref in refs)
    for problem in report.problems:
        assert problem.code and problem.field


def sample(name: str) -> IngestReport:
    return read_hl7v2((SAMPLES / name).read_bytes(), institution=INSTITUTION)


def test_sample_admission_maps_patient_and_inpatient_encounter() -> None:
    report = sample("ADT01-23.hl7")  # v2.3, CR separators
    [enc] = by_kind(report)["encounter"]
    assert enc["payload"]["encounter_class"] == "inpatient"
    assert enc["payload"]["start"] == "2005-01-10T04:55:02+07:00"
    assert by_kind(report)["patient"][0]["payload"]["patient"] == {"mrn": "10006579"}


def test_sample_lab_report_maps_results_with_units_and_ranges() -> None:
    report = sample("LRI_2.0-NG_CBC_Typ_Message.hl7")
    results = [
        i
        for i in by_kind(report)["observation"]
        if "/OBX/" in i["source_id"] and "value_quantity" in i["payload"]
    ]
    assert len(results) == 19
    assert all(r["payload"]["value_quantity"]["unit"] for r in results)
    first = results[0]["payload"]
    assert (
        first["reference_range"]["low"]["value"],
        first["reference_range"]["high"]["value"],
    ) == ("4.3", "6.2")


def test_sample_immunization_keeps_its_cvx_code() -> None:
    [imm] = by_kind(sample("IZ_1_1.1_Admin_Child_Max_Message.hl7"))["immunization"]
    assert imm["payload"]["vaccine"]["system"] == "http://hl7.org/fhir/sid/cvx"
    assert imm["payload"]["vaccine"]["code"] == "140"


def test_sample_merge_names_the_survivor_and_the_merged() -> None:
    [merge] = sample("ADT-A40-01.hl7").items
    assert merge["kind"] == "merge"
    assert merge["payload"] == {"patient": {"mrn": "12345"}, "merged": {"mrn": "56789"}}


def test_sample_scheduling_message_is_refused_as_unsupported() -> None:
    report = sample("SIU-S12-01.hl7")
    [problem] = report.problems
    assert (problem.code, problem.field) == ("hl7.unsupported_type", "MSH-9")
    assert "SIU^S12" in problem.message


def test_sample_referral_maps_to_a_referral_item() -> None:
    # REF^I12: a referral from GHH to RHH, whose HL7 facility the consortium knows by a code.
    report = read_hl7v2(
        (SAMPLES / "REF-I12-01.hl7").read_bytes(),
        institution=INSTITUTION,
        facilities={"RHHFacility": "county-hosp"},
    )
    assert report.problems == []
    kinds = by_kind(report)
    # The patient as the other mappers send it: by MRN (US data, no resident ID).
    [pat] = kinds["patient"]
    assert pat["payload"]["patient"] == {"mrn": "PATID1234"}
    # The referral is named by its originating referral identifier (RF1-6).
    [ref] = kinds["referral"]
    assert ref["source_id"] == "226839"
    payload = ref["payload"]
    assert payload["patient"] == {"mrn": "PATID1234"}
    # MSH-6 (receiving facility) through the facilities map; RF1-2 R is routine.
    assert (payload["to_institution"], payload["urgency"]) == ("county-hosp", "routine")
    # The referring provider (PRD RP), and the departments of both providers' locations.
    assert payload["referring_doctor"] == "ROBERT POWELL"
    assert (payload["from_department"], payload["to_department"]) == (
        "GENERAL FACILITY",
        "GI FACILITY",
    )
    # The reason: RF1-24's text, qualified by RF1-3 (type) and RF1-10 (reason).
    assert payload["reason"] == (
        "Referral to Specialist (referral type: Medical; referral reason: Provider Ordered)"
    )
    # The impression is DG1's ICD-10 code; the treatment so far is PR1's procedure.
    assert payload["impression"] == [
        {"system": ICD10, "code": "K63.3", "display": "Ulcer of Intestine"}
    ]
    assert payload["treatment"] == "Biopsy of colon, which was part of colonoscopy (2021-09-07)"
    # The message's own note (not the notes on its lab results) is the history.
    assert payload["history"] == "Lab test"
    # RF1-7 gives only a date: the message time (MSH-7, with its offset) is the request time.
    assert payload["requested_at"] == "2022-01-25T16:20:00+00:00"
    # Insurance, guarantor and the lab results are not part of a referral: said, not refused.
    assert "REF^I12 IN1: segment not mapped" in report.skipped
    assert "REF^I12 OBX: segment not mapped" in report.skipped
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []


def test_sample_referral_without_a_facility_map_goes_to_the_facility_code() -> None:
    # Without a map, MSH-6's namespace id is taken as the institution code (it is one).
    [ref] = by_kind(sample("REF-I12-02.hl7"))["referral"]
    assert ref["payload"]["to_institution"] == "RHHFacility"
    assert ref["payload"]["requested_at"] == "2022-01-25T16:20:00+02:15"
    # The universal id of MSH-6 may be mapped too.
    mapped = read_hl7v2(
        (SAMPLES / "REF-I12-02.hl7").read_bytes(),
        institution=INSTITUTION,
        facilities={"2.16.840.1.1122848.1.32": "county-hosp"},
    )
    assert by_kind(mapped)["referral"][0]["payload"]["to_institution"] == "county-hosp"


@pytest.mark.parametrize(
    "name, at",
    [
        ("REF-I14-01.hl7", "2022-01-25T16:20:00+00:00"),
        ("REF-I14-02.hl7", "2021-01-15T16:20:00+02:15"),
    ],
)
def test_sample_referral_cancellation_is_a_cancel_action(name: str, at: str) -> None:
    report = sample(name)
    assert report.problems == []
    [cancel] = by_kind(report)["referral_action"]
    # Named after the referral it cancels, which it names by this institution and RF1-6.
    assert cancel["source_id"] == "226839/cancel"
    assert cancel["payload"]["referral"] == f"{INSTITUTION}/226839"
    assert cancel["payload"]["action"] == "cancel"
    assert cancel["payload"]["at"] == at
    assert cancel["payload"]["reason"] == "cancelled by the referring institution (REF^I14)"
    assert cancel["payload"]["by"] == "ROBERT POWELL"
    assert check_item(cancel, where="item", source_id=cancel["source_id"]) == []


def message_type(path: Path) -> str:
    """MSH-9's type and event, read from the file as it is."""
    first = re.split(rb"\r\n|\r|\n", path.read_bytes().removeprefix(b"\xef\xbb\xbf"))[0]
    return "^".join(first.decode().split("|")[8].split("^")[:2])


def counts() -> dict[str, tuple[int, int, int, Counter[str]]]:
    """Per message type: samples, samples that map (some items), samples that map whole (no
    problem), and the problem codes of the rest."""
    out: dict[str, tuple[int, int, int, Counter[str]]] = {}
    for path in SAMPLE_FILES:
        report = read_hl7v2(path.read_bytes(), institution=INSTITUTION)
        n, some, whole, codes = out.get(message_type(path), (0, 0, 0, Counter[str]()))
        codes.update(p.code for p in report.problems)
        out[message_type(path)] = (
            n + 1,
            some + bool(report.items),
            whole + bool(report.items and not report.problems),
            codes,
        )
    return out


def test_sample_counts_per_message_type() -> None:
    # The measure the README quotes: per message type, how many samples map (whole, or with
    # some items refused) and why the others are refused.
    table = counts()
    print("\nHL7 v2 samples by MSH-9: samples, map, map whole, problems")
    for kind, (n, some, whole, codes) in sorted(table.items()):
        print(f"  {kind:8} {n:3} {some:3} {whole:3}  {dict(codes) or ''}")
    print("  total    " + " ".join(f"{sum(row[i] for row in table.values()):3}" for i in range(3)))
    assert sum(row[0] for row in table.values()) == len(SAMPLE_FILES)
    for kind, (n, some, _, codes) in table.items():
        if kind in MAPPERS:
            assert some == n, f"every {kind} sample maps, at least in part"
        else:  # refused whole, and only for its type
            assert (some, dict(codes)) == (0, {"hl7.unsupported_type": n}), kind
    # Every ADT visit event, the results, orders, prescriptions, immunizations and referrals
    # of the samples map without a problem but for the three named below.
    whole = sum(row[2] for kind, row in table.items() if kind in MAPPERS)
    assert whole == sum(row[0] for kind, row in table.items() if kind in MAPPERS) - len(STILL)


# What is still refused in the samples of mapped types, and why: each the sender's to fix.
STILL = [
    # ORC-1 CA cancels an order: the canonical record has no cancelled observation order.
    ("OML-O21-03.hl7", "hl7.order_control", "ORC[5]-1"),
    # OBX-11 (result status) is required by HL7 and empty here.
    ("ORU-R01-01.hl7", "hl7.result_status", "OBX[2]-11"),
    # The report (OBR) gives no time: OBR-7 and OBR-22 are empty (its time is in OBR-23).
    ("LAB-ORU-1.hl7", "hl7.required", "OBR[1]-7"),
]


@pytest.mark.parametrize(("name", "code", "field"), STILL, ids=[s[0] for s in STILL])
def test_what_the_samples_still_have_refused_is_one_item_by_name(
    name: str, code: str, field: str
) -> None:
    report = sample(name)
    assert [(p.code, p.field) for p in report.problems] == [(code, field)]
    assert report.problems[0].source_id  # one item, not the message
    assert report.items


def test_sample_registration_without_a_visit_number_derives_its_visit() -> None:
    # ADT04-251: an emergency registration with no PV1-19; PV1-44 gives the arrival.
    [enc] = by_kind(sample("ADT04-251.hl7"))["encounter"]
    assert enc["record"].startswith("enc:derived:")
    assert enc["payload"]["encounter_class"] == "emergency"
    assert enc["payload"]["start"] == "2019-05-04T18:12:05+07:00"


def test_sample_admission_without_an_admit_time_is_dated_by_its_event() -> None:
    # ADT01-28: no PV1-19 and no PV1-44; the A01's EVN-2 is the admission.
    [enc] = by_kind(sample("ADT01-28.hl7"))["encounter"]
    assert enc["record"].startswith("enc:derived:")
    assert enc["payload"]["start"] == "2007-08-18T11:23:00+07:00"


def test_sample_preadmit_class_is_a_pre_admission_encounter() -> None:
    # PV1-2 P (preadmit) → PRENC, as the HL7 v2-to-FHIR ConceptMap maps it.
    [enc] = by_kind(sample("ADT-A01-01.hl7"))["encounter"]
    assert enc["payload"]["encounter_class"] == "pre-admission"


def test_sample_report_keeps_a_pointer_and_a_result_dated_to_the_day() -> None:
    obs = {i["source_id"]: i["payload"] for i in by_kind(sample("ORU-R01-01.hl7"))["observation"]}
    pointer = next(p for p in obs.values() if p["code"]["code"] == "8867-4")
    assert pointer["value_string"] == "https://testurl.com"
    assert pointer["effective"] == "1999-07-02"  # OBX-14 gives the day: a FHIR date
    coded = next(p for p in obs.values() if "value_coding" in p)
    assert coded["value_coding"]["code"] == "27268008"
