"""The FHIR R4 adapter's references (conditional, logical, registered, unresolvable) and the
Synthea sample bundles, mapped as they are and against their directory bundles."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from adapters.fhir import read_fhir
from adapters.fhir_resources import MAPPERS
from adapters.report import check_item
from domain.identity import RESIDENT_ID_SYSTEM
from tests.unit.fhir_builders import (
    HOSPITAL_OID,
    INSTITUTION,
    REGISTERED,
    RID,
    STAFF,
    bundle,
    doctor,
    encounter,
    medication,
    medication_request,
    observation,
    patient,
    procedure,
)

SYNTHEA = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "testdata"
    / "fhir"
    / "synthea-fhir-data-pipes"
)
SYNTHEA_FILES = sorted(SYNTHEA.glob("*.json"))
MAPPED = set(MAPPERS)


# References: conditional, logical, registered, unresolvable ------------------------------------


def test_registered_institutions_resolve_organisations_by_identifier_or_code() -> None:
    # Named by a registry identifier listed in the map, or by the consortium's institution code.
    for reference in (
        f"Organization?identifier={HOSPITAL_OID}|12341122000001",
        "Organization?identifier=urn:county-hie:institution|county-hospital",
    ):
        report = read_fhir(
            bundle(
                patient(), encounter(), procedure(performer=[{"actor": {"reference": reference}}])
            ),
            institution=INSTITUTION,
            institutions=REGISTERED,
        )
        assert report.problems == [] and report.skipped == []
        assert report.items[2]["payload"]["performer"] == "county-hospital"
    # Without the map the same reference resolves to nothing: the procedure maps without it.
    report = read_fhir(bundle(patient(), encounter(), procedure()), institution=INSTITUTION)
    assert report.problems == [] and "performer" not in report.items[2]["payload"]
    assert report.skipped == [
        "Bundle.entry[2].resource.performer[0].actor: is a conditional reference whose "
        "identifier matches no Organization in this document, its directories or the "
        "registered institutions; it is left out"
    ]


def test_an_unresolved_display_reference_does_not_sink_the_item() -> None:
    # The attending is named by a staff number the bundle does not hold; the display stands in.
    enc = encounter(
        participant=[
            {
                "type": [{"coding": [{"code": "ATND"}]}],
                "individual": {
                    "reference": f"Practitioner?identifier={STAFF}|D999",
                    "display": "张医生",
                },
            }
        ]
    )
    report = read_fhir(bundle(patient(), enc), institution=INSTITUTION)
    assert report.problems == []
    assert report.items[1]["payload"]["attending"] == "张医生"
    [line] = report.skipped
    assert line.startswith("Bundle.entry[1].resource.participant[0].individual: ")
    assert "display text is used" in line and "D999" not in line


@pytest.mark.parametrize(
    ("reference", "why"),
    [
        ("Practitioner?name=李", "search parameters other than identifier"),
        (f"Practitioner?identifier={STAFF}|D017", "matches more than one"),
        ("Organization/nowhere", "refers to no resource in this document"),
    ],
)
def test_references_that_cannot_be_resolved_are_reported(reference: str, why: str) -> None:
    doc = bundle(
        patient(),
        medication(),
        medication_request(requester={"reference": reference}),
        doctor(),
        doctor() | {"id": "li2"},
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert report.problems == [] and "requester" not in report.items[1]["payload"]
    assert [s for s in report.skipped if why in s] == [
        s for s in report.skipped if s.startswith("Bundle.entry[2].resource.requester: ")
    ]
    assert len([s for s in report.skipped if why in s]) == 1


def test_an_unresolved_medication_makes_the_prescription_wrong() -> None:
    # Without the drug there is nothing to prescribe: a problem, not a note.
    doc = bundle(
        patient(),
        medication_request(medicationReference={"reference": "Medication?identifier=urn:drugs|X1"}),
    )
    report = read_fhir(doc, institution=INSTITUTION)
    assert [(p.code, p.field) for p in report.problems] == [
        ("fhir.medication_unresolved", "Bundle.entry[1].resource.medicationReference")
    ]
    assert [i["kind"] for i in report.items] == ["patient"]


def test_a_conditional_subject_resolves_in_the_bundle_or_names_the_patient() -> None:
    by_rid = {"reference": f"Patient?identifier={RESIDENT_ID_SYSTEM}|{RID}"}
    # In the bundle: the Patient's whole ref.
    report = read_fhir(bundle(patient(), observation(subject=by_rid)), institution=INSTITUTION)
    assert report.items[1]["payload"]["patient"] == {"resident_id": RID, "mrn": "MR000123"}
    # Alone: the identifier it names, which the exchange links by.
    obs = observation(subject=by_rid)
    del obs["encounter"]
    report = read_fhir(obs, institution=INSTITUTION)
    assert report.problems == []
    assert report.items[0]["payload"]["patient"] == {"resident_id": RID}


# The Synthea sample bundles (US synthetic patients; used as they are) ------------------------

SYNTHEA_KINDS = {  # what each file holds that the exchange maps, by kind
    "Ardith914": {"patient": 1, "encounter": 18, "immunization": 36, "document": 18},
    "Lemuel304": {"patient": 1, "encounter": 7, "immunization": 22, "document": 7},
    "hospitalInformation1631543164888": {},
    "practitionerInformation1631543164888": {},
}
DIRECTORIES = [p for p in SYNTHEA_FILES if "Information" in p.name]


def test_the_synthea_samples_are_present() -> None:
    assert len(SYNTHEA_FILES) >= 4, f"expected the Synthea sample bundles under {SYNTHEA}"
    assert {p.name.split("_")[0].removesuffix(".json") for p in SYNTHEA_FILES} == set(SYNTHEA_KINDS)


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda p: p.stem[:12])
def test_synthea_bundles_map_whole(path: Path) -> None:
    doc = json.loads(path.read_bytes())
    report = read_fhir(path.read_bytes(), institution=INSTITUTION)
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    kinds = Counter(i["kind"] for i in report.items)
    # Nothing refused; every item is one the gateway takes.
    assert report.problems == []
    assert dict(kinds) == SYNTHEA_KINDS[path.name.split("_")[0].removesuffix(".json")]
    for item in report.items:
        assert check_item(item, where="item", source_id=item["source_id"]) == []
    # Claims, ExplanationOfBenefit, Provenance, Organization, ...: each said to be not mapped.
    unmapped = [s for s in report.skipped if s.endswith("resource type not mapped")]
    assert len(unmapped) == sum(t not in MAPPED for t in types)
    if "Patient" in types:
        # No resident ID: the patient goes by the hospital's MRN (typed MR), and so does all.
        person = next(
            e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"
        )
        assert {json.dumps(i["payload"]["patient"]) for i in report.items} == {
            json.dumps({"mrn": person["id"]})
        }
        # Times keep Synthea's offset.
        assert all(
            i["payload"]["start"].endswith("+00:00")
            for i in report.items
            if i["kind"] == "encounter"
        )
        # Each note is sent once: as the DocumentReference, not again as its DiagnosticReport.
        assert sum(
            "presentedForm is sent as the DocumentReference" in s for s in report.skipped
        ) == types.count("DiagnosticReport")
        # Practitioners and Locations are conditional references to the other files: reported.
        unresolved = [s for s in report.skipped if "conditional reference" in s]
        assert unresolved and all("display text is used" in s for s in unresolved)


@pytest.mark.parametrize(
    "path", [p for p in SYNTHEA_FILES if p not in DIRECTORIES], ids=lambda p: p.stem[:12]
)
def test_synthea_references_resolve_against_the_directory_bundles(path: Path) -> None:
    alone = read_fhir(path.read_bytes(), institution=INSTITUTION)
    report = read_fhir(
        path.read_bytes(),
        institution=INSTITUTION,
        directories=[p.read_bytes() for p in DIRECTORIES],
    )
    assert report.problems == [] and len(report.items) == len(alone.items)
    assert not [s for s in report.skipped if "conditional reference" in s]
    # The attending now comes from the Practitioner resource itself (prefix, given, family).
    attending = {i["payload"].get("attending") for i in report.items if i["kind"] == "encounter"}
    assert attending and all(a and a.startswith("Dr. ") for a in attending)
