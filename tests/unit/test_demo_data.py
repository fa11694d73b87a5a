"""The demo county's synthetic data: valid resident IDs, bundles the FHIR adapter takes whole."""

from __future__ import annotations

import json
from datetime import date

import pytest

from adapters.fhir import read_fhir
from domain.identity import RESIDENT_ID_SYSTEM
from domain.resident_id import parse_resident_id
from exchange.demo.data import demo_bundles, demo_residents

INSTITUTIONS = ["county-hospital", "dongcheng-thc", "xishan-thc", "taoyuan-vc"]


def test_demo_residents_have_valid_ids_matching_their_sex_and_birth_date() -> None:
    residents = demo_residents(count=12)
    assert len({r.resident_id for r in residents}) == 12
    for r in residents:
        rid = parse_resident_id(r.resident_id)  # GB 11643 check digit and birth date
        assert rid.sex == r.gender
        assert rid.birth_date.isoformat() == r.birth_date
        assert date(1940, 1, 1) <= rid.birth_date <= date(2015, 12, 31)
        assert 2 <= len(r.name) <= 3 and r.name[0] in "王李张刘陈杨赵黄周吴"


def test_demo_residents_are_deterministic_and_a_longer_list_extends_a_shorter() -> None:
    assert demo_residents() == demo_residents()
    assert demo_residents(count=8)[:6] == demo_residents()
    assert demo_residents(seed=1) != demo_residents()


@pytest.mark.parametrize("institution", INSTITUTIONS)
def test_every_demo_bundle_maps_with_no_problems(institution: str) -> None:
    residents = demo_residents(count=8)
    for resident, bundle in zip(residents, demo_bundles(institution, residents), strict=True):
        # Sent as a file would be: JSON text.
        report = read_fhir(json.dumps(bundle, ensure_ascii=False).encode(), institution=institution)
        assert report.problems == [] and report.skipped == []
        kinds = [i["kind"] for i in report.items]
        assert kinds[:2] == ["patient", "encounter"]
        assert 1 <= kinds.count("condition") <= 2 and 2 <= kinds.count("observation") <= 4
        assert {i["payload"]["patient"]["resident_id"] for i in report.items} == {
            resident.resident_id
        }
        patient = report.items[0]["payload"]
        assert (patient["name"], patient["gender"]) == (resident.name, resident.gender)
        assert patient["patient"]["mrn"]
        assert report.items[1]["payload"]["start"].endswith("+08:00")


def test_demo_bundles_are_stable_and_differ_between_institutions() -> None:
    residents = demo_residents()
    # Generating again gives the same bundles (so a resend is a repeat).
    assert demo_bundles("dongcheng-thc", residents) == demo_bundles("dongcheng-thc", residents)
    # A bundle does not depend on which other residents were in the list.
    assert (
        demo_bundles("dongcheng-thc", residents[-1:])
        == demo_bundles("dongcheng-thc", residents)[-1:]
    )
    # The same resident at another institution: a different visit, the same resident ID.
    here, there = (demo_bundles(i, residents[:1])[0] for i in ("dongcheng-thc", "taoyuan-vc"))
    assert here != there
    ids = [
        [i for i in b["entry"][0]["resource"]["identifier"] if i["system"] == RESIDENT_ID_SYSTEM]
        for b in (here, there)
    ]
    assert ids[0] == ids[1]


def test_demo_resource_ids_are_unique_across_the_county() -> None:
    residents = demo_residents(count=8)
    ids = [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for institution in INSTITUTIONS
        for b in demo_bundles(institution, residents)
        for e in b["entry"]
    ]
    assert len(ids) == len(set(ids))
    mrns = [
        b["entry"][0]["resource"]["identifier"][1]["value"]
        for b in demo_bundles("county-hospital", residents)
    ]
    assert len(set(mrns)) == len(mrns)
