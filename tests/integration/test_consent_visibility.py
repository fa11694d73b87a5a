"""Which consents a reader sees (GET /fhir/Consent): the patient every one; a clinician those
that bear on their own institution's reads, never what the patient agreed with other members
or its sensitive categories."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import consent_item, record_items, resident
from tests.integration.conftest import PROFILES, Running
from tests.integration.consent_steps import match, patient_of, treat
from tests.integration.referral_steps import accepted, consortium
from tests.integration.test_walking_skeleton import token

# The scenario runs under each crypto profile (issue 17).
pytestmark = pytest.mark.parametrize("crypto_profile", PROFILES)


async def test_a_clinician_sees_the_consents_that_bear_on_their_institution_only(
    exchange: Running,
) -> None:
    """A patient agreed with the township centre to share HIV results for research, and with
    the county hospital for treatment. The county's physician sees the county's consent, not
    what the patient agreed with another member (nor its sensitive categories); the patient
    sees both."""
    await consortium(exchange)
    rid = resident(84)
    pid = await patient_of(exchange, rid)
    await accepted(exchange, "county", record_items(rid, "cty-84")[1:])
    township = consent_item(rid, "c-thc", scope=["thc-east"], purposes=["TREAT", "HRESCH"])
    township["payload"]["categories"] = ["hiv", "lab"]
    county = consent_item(rid, "c-cty", scope=["county"])
    await accepted(exchange, "thc-east", [township])
    await accepted(exchange, "county", [county])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        seen = await http.get("/fhir/Consent", params={"patient": pid}, headers=treat(exchange))
        own = await http.get(
            "/fhir/Consent",
            params={"patient": pid},
            headers=token(exchange, pid, "patient", "patient"),
        )
    assert seen.status_code == own.status_code == 200
    assert len(match(seen)) == 1 and "hiv" not in seen.text and "thc-east" not in seen.text
    assert len(match(own)) == 2 and "hiv" in own.text
