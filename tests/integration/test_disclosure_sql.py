"""The disclosure rule has one owner, ``audit/disclosure.py``; on the read path it is applied
to the "Type/id" lines that the record's page query (``bundle_entries``) returns beside the
Bundle entries it joins. Here both meet on real records of 0, 1, 20, 21 and 200 disclosed
resources — on either side of ``LISTED`` — with and without the Patient line in front: the
lines the SQL gives, and so the audit record's disclosure, must be those of the resources the
Bundle actually holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from audit.disclosure import LISTED, summary
from tests.factories import condition_item, encounter_item, observation_item, patient_item, resident
from tests.integration.conftest import Running
from tests.integration.referral_steps import accepted, consortium

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
    recorded = summary(page.lines)
    assert recorded == summary(sorted(disclosed))
    assert recorded["disclosed_count"] == n + with_patient
    assert ("disclosed_sha256" in recorded) == (n + with_patient > LISTED)
