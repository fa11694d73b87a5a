"""Steps the record-reading stories share: a physician finds a patient by resident ID and reads
their whole record, by resource type."""

from __future__ import annotations

from typing import Any

import httpx

from domain.identity import RESIDENT_ID_SYSTEM
from tests.integration.conftest import Running
from tests.integration.test_walking_skeleton import token


async def record_by_type(
    running: Running, institution: str, person: str, resident_id: str
) -> dict[str, list[dict[str, Any]]]:
    """``$everything`` for treatment as a physician of ``institution``, by resource type."""
    headers = {**token(running, person, institution, "physician"), "X-Purpose-Of-Use": "TREAT"}
    async with httpx.AsyncClient(base_url=running.url) as http:
        found = await http.get(
            "/fhir/Patient",
            headers=headers,
            params={"identifier": f"{RESIDENT_ID_SYSTEM}|{resident_id}"},
        )
        assert found.status_code == 200, found.text
        patient_id = found.json()["entry"][0]["resource"]["id"]
        record = await http.get(f"/fhir/Patient/{patient_id}/$everything", headers=headers)
        assert record.status_code == 200, record.text
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in record.json()["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return by_type
