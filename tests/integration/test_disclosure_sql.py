"""The disclosure rule has one owner, ``audit/disclosure.py``; on the read path it is applied
to the "Type/id" lines that the record's page query (``bundle_entries``) returns beside the
Bundle entries it joins. Here both meet on real records of 0, 1, 20, 21 and 200 disclosed
resources — on either side of ``LISTED`` — with and without the Patient line in front: the
lines the SQL gives, and so the audit record's disclosure, must be those of the resources the
Bundle actually holds. And a large disclosure, digested with the audit log's hash in the
field that names it (``disclosed_sha256`` under intl, ``disclosed_sm3`` under gm), is rebuilt
from the ledger and checked by the regulator's ``/audit/disclosed``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from audit.disclosure import LISTED, digest, summary
from tests.factories import (
    condition_item,
    encounter_item,
    observation_item,
    patient_item,
    record_items,
    resident,
)
from tests.integration.conftest import PROFILES, Running
from tests.integration.consent_steps import disclosed, match, patient_of, treat
from tests.integration.referral_steps import accepted, consortium
from tests.integration.test_walking_skeleton import token

# (clinical entries the patient has, whether the Patient resource is disclosed in front)
CASES = [
    (0, False),
    (0, True),
    (1, False),
    (20, False),
    (19, True),
    (21, False),
    (20, True),
    (200, True),
]


def entries(rid: str, n: int) -> list[dict[str, Any]]:
    """n clinical items of three resource types."""
    make = (observation_item, condition_item, encounter_item)
    return [make[i % 3](rid, f"e-{i}") for i in range(n)]


@pytest.mark.parametrize(
    ("n", "with_patient"), CASES, ids=[f"{n}{'+patient' if p else ''}" for n, p in CASES]
)
async def test_the_sql_page_agrees_with_the_disclosure_rule(
    exchange: Running, n: int, with_patient: bool
) -> None:
    # A patient with exactly n entries, sent in envelopes of at most 50 items.
    await consortium(exchange)
    rid = resident(300 + n)
    items = [patient_item(rid, "p"), *entries(rid, n)]
    for start in range(0, len(items), 50):
        await accepted(exchange, "thc-east", items[start : start + 50])
    await exchange.settle()
    records = exchange.rt.records
    root = await records.root(exchange.rt.ledger.patient_id(rid))
    assert root is not None
    members = await records.members(root)
    first = f"Patient/{root}" if with_patient else None

    # The read path's query.
    page = await records.bundle_entries(root, members, None, first=first)

    # What was disclosed, read from the Bundle entries themselves (not from the SQL's lines).
    bundle = json.loads(b"[" + page.entries + b"]")
    disclosed = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle]
    disclosed += [first] if first else []
    assert page.count == n and len(disclosed) == n + with_patient
    # The lines are exactly those, sorted, so the audit record the read API builds from them
    # says what the rule says of the Bundle, field for field.
    assert page.lines == sorted(disclosed)
    hash_name = exchange.rt.settings.profile.hash_name  # the audit log's (crypto profile's)
    recorded = summary(page.lines, hash_name)
    assert recorded == summary(sorted(disclosed), hash_name)
    assert recorded["disclosed_count"] == n + with_patient
    assert (f"disclosed_{hash_name}" in recorded) == (n + with_patient > LISTED)


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_a_large_disclosure_is_digested_in_the_audit_and_rebuilt_from_the_ledger(
    exchange: Running,
) -> None:
    await consortium(exchange)
    rid = resident(87)
    pid = await patient_of(exchange, rid)
    readings = [observation_item(rid, f"bp-{n}", value=str(120 + n)) for n in range(30)]
    await accepted(exchange, "county", [*record_items(rid, "cty-87", consent=True), *readings])
    await exchange.settle()
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        read = await http.get(f"/fhir/Patient/{pid}/$everything", headers=treat(exchange))
        assert read.status_code == 200 and len(match(read)) == 34
        record = await exchange.rt.pool.fetchval(
            "SELECT record_text::jsonb FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
            read.headers["x-request-id"],
        )
        record = json.loads(record)
        # Counted, typed and digested rather than listed, with the audit log's hash in the
        # field that names it (disclosed_sha256 under intl, disclosed_sm3 under gm) ...
        hash_name = exchange.rt.settings.profile.hash_name
        digested, other = f"disclosed_{hash_name}", {"sha256": "sm3", "sm3": "sha256"}[hash_name]
        assert record["disclosed"] == [] and record["disclosed_count"] == 34
        assert record["resource_types"] == ["Condition", "Encounter", "Observation", "Patient"]
        assert len(record[digested]) == 64 and f"disclosed_{other}" not in record
        # ... and the list itself rebuilt from the ledger matches the digest.
        rebuilt = await disclosed(exchange, http, read)
        assert rebuilt["matches_record"] and rebuilt["count"] == 34 and "finding" not in rebuilt
        assert record[digested] == digest(rebuilt["disclosed"], hash_name)
        seq = rebuilt["seq"]
        regulator = token(exchange, "reg-1", "bureau", "regulator")
        # A changed digest would not match: the check is real.
        async with exchange.owner() as owner:  # only the owner can, and the check sees it
            await owner.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
            await owner.execute(
                "UPDATE audit_log SET record_text = replace(record_text, $2, $3) WHERE seq = $1",
                seq,
                record[digested],
                "0" * 64,
            )
        tampered = (
            await http.get("/audit/disclosed", params={"seq": seq}, headers=regulator)
        ).json()
        assert not tampered["matches_record"]
        # A digest in the other profile's field is checked with the hash it names, and named
        # as a finding: this log's records are made with its own hash.
        async with exchange.owner() as owner:
            await owner.execute(
                "UPDATE audit_log SET record_text = replace(replace(record_text, $2, $3), $4, $5) "
                "WHERE seq = $1",
                seq,
                f'"{digested}"',
                f'"disclosed_{other}"',
                "0" * 64,
                digest(rebuilt["disclosed"], other),
            )
        foreign = (
            await http.get("/audit/disclosed", params={"seq": seq}, headers=regulator)
        ).json()
        assert foreign["matches_record"] and foreign["finding"]["code"] == "audit.digest_hash"
        assert f"disclosed_{other}" in foreign["finding"]["message"]
