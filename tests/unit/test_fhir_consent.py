"""A FHIR Consent becomes the exchange's consent item where it says what PIPL needs (who signed,
the notice shown, purposes, whom and what it covers, when), and is refused with the reason
where it cannot. Synthetic data only."""

from __future__ import annotations

import base64
import hashlib
from datetime import date
from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fhir import read_fhir
from domain.clinical import parse_payload
from domain.identity import RESIDENT_ID_SYSTEM
from domain.resident_id import make_resident_id
from projections.render import render
from tests.unit.fhir_builders import INSTITUTION, REGISTERED, assert_valid, bundle, patient
from tests.unit.test_fhir_robustness import assert_in_fhir_terms, json_values, mutated, paths

NOTICE = hashlib.sha256("县域医共体患者信息共享告知书（第3版）".encode()).hexdigest()
IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
FORM = b"%PDF-1.7 signed consent form (synthetic)"
GUARDIAN_RID = make_resident_id("341122", date(1980, 1, 5), 31)


def consent(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": "cs1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "urn:uuid:pat-1"},
        "dateTime": "2026-03-02T09:00:00+08:00",
        "performer": [{"reference": "urn:uuid:pat-1"}],
        "policy": [{"uri": f"urn:sha256:{NOTICE}"}],
        "provision": {
            "type": "permit",
            "period": {"start": "2026-03-02", "end": "2027-03-01"},
            "actor": [
                {
                    "role": IRCP,
                    "reference": {
                        "identifier": {"system": "urn:county-hie:institution", "value": v}
                    },
                }
                for v in (INSTITUTION, "county-hospital")
            ],
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
            "securityLabel": [
                {"system": "urn:county-hie:data-category", "code": "diagnosis"},
                {"system": "urn:county-hie:data-category", "code": "medication"},
            ],
        },
        **changes,
    }


def mapped(*resources: dict[str, Any]) -> Any:
    return read_fhir(
        bundle(patient(), *resources), institution=INSTITUTION, institutions=REGISTERED
    )


def test_a_consent_maps_with_what_pipl_asks_it_to_say() -> None:
    report = mapped(consent())
    assert report.problems == []
    [item] = [i for i in report.items if i["kind"] == "consent"]
    payload = item["payload"]
    assert payload["consent_type"] == "separate" and payload["signed_by"] == "patient"
    assert payload["scope"] == [INSTITUTION, "county-hospital"]
    assert payload["purposes"] == ["TREAT"] and payload["notice_sha256"] == NOTICE
    assert payload["categories"] == ["diagnosis", "medication"]
    # A date alone counts from that day's start to the end of the last day, China time.
    assert payload["valid_from"] == "2026-03-02T00:00:00+08:00"
    assert payload["valid_to"] == "2027-03-02T00:00:00+08:00"
    # What the exchange renders of it is a Consent saying the same.
    out = render(
        "consent",
        parse_payload("consent", payload),
        resource_id=uuid4(),
        patient_id=uuid4(),
        institution=INSTITUTION,
        institution_name="东城镇卫生院",
    )
    assert out["provision"]["purpose"][0]["code"] == "TREAT"
    assert out["policy"] == [{"uri": f"urn:sha256:{NOTICE}"}]


def test_the_signed_form_is_the_signature_basis_and_the_notice() -> None:
    form = {"contentType": "application/pdf", "data": base64.b64encode(FORM).decode()}
    report = mapped(consent(performer=None, policy=None, sourceAttachment=form))
    assert report.problems == []
    payload = report.items[1]["payload"]
    digest = hashlib.sha256(FORM).hexdigest()
    assert payload["signed_document"] == {"sha256": digest, "method": "handwritten-scan"}
    assert payload["notice_sha256"] == digest and payload["signed_by"] == "patient"


def test_a_guardian_signs_by_resident_id() -> None:
    parent = {
        "resourceType": "RelatedPerson",
        "id": "rp1",
        "patient": {"reference": "urn:uuid:pat-1"},
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": GUARDIAN_RID}],
    }
    report = mapped(parent, consent(performer=[{"reference": "RelatedPerson/rp1"}]))
    assert report.problems == []
    payload = next(i for i in report.items if i["kind"] == "consent")["payload"]
    assert payload["signed_by"] == "guardian"
    assert payload["guardian"] == {"resident_id": GUARDIAN_RID}


def test_a_consent_that_cannot_say_it_is_refused_with_the_reason() -> None:
    cases = {
        "fhir.consent_signature": consent(
            performer=[{"reference": "Organization/org1"}], sourceAttachment=None
        ),
        "fhir.consent_notice": consent(policy=None),
        "fhir.consent_purpose": consent(
            provision={**consent()["provision"], "purpose": None},
        ),
        "fhir.consent_deny": consent(provision={**consent()["provision"], "type": "deny"}),
        "fhir.consent_actor": consent(
            provision={
                **consent()["provision"],
                "actor": [{"role": IRCP, "reference": {"reference": "#x"}}],
            }
        ),
    }
    for code, resource in cases.items():
        clean = {k: v for k, v in resource.items() if v is not None}
        clean["provision"] = {k: v for k, v in clean["provision"].items() if v is not None}
        report = mapped(clean)
        assert code in [p.code for p in report.problems], code
        assert [i["kind"] for i in report.items] == ["patient"], code


def test_a_consent_not_in_force_is_left_out_by_name() -> None:
    report = mapped(consent(status="draft"))
    assert report.problems == [] and [i["kind"] for i in report.items] == ["patient"]
    assert any("not in force" in s for s in report.skipped)


CONSENT_PATHS = paths(bundle(patient(), consent()))[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONSENT_PATHS), json_values)
def test_a_consent_with_any_one_part_replaced_never_raises(
    where: tuple[Any, ...], value: Any
) -> None:
    doc = mutated(bundle(patient(), consent()), where, value)
    report = read_fhir(doc, institution=INSTITUTION, institutions=REGISTERED)
    assert_valid(report.items)
    assert_in_fhir_terms(report, doc)
