"""Properties of the gate on the real servers, over random histories of consents, withdrawals,
entries of every sensitivity and reads:

- no permitted response contains a category the decision did not let through;
- a withdrawal denies every read after its position (no later decision rests on it);
- deciding any past read again from the ledger as it stood gives the recorded decision;
- no sequence of a member's submissions opens the record beyond that member, or lets a
  sensitive category or research through, without a consent the patient confirmed (here: one
  recorded with its signed form).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.categories import SENSITIVE
from tests.factories import consent_item, record_items, resident
from tests.integration.conftest import Running
from tests.integration.consent_steps import depression, hiv_test, redecided, study, treat
from tests.integration.referral_steps import accepted, consortium

_serial = itertools.count(200)
CATEGORY_CHOICES = st.none() | st.lists(
    st.sampled_from(["demographics", "encounter", "diagnosis", "lab", "vital", *SENSITIVE]),
    min_size=1,
    max_size=5,
    unique=True,
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("consent"),
            st.sampled_from([["*"], ["county"], ["thc-east"]]),
            CATEGORY_CHOICES,
            st.booleans(),  # recorded with the patient's signed form, or only on the member's word
        ),
        st.tuples(st.just("withdraw"), st.integers(0, 5)),
        st.tuples(st.just("entry"), st.sampled_from(["plain", "hiv", "psychiatric"])),
        st.tuples(
            st.just("read"),
            st.sampled_from(["county", "thc-east", "vc-peach"]),
            st.sampled_from(["TREAT", "HRESCH"]),
        ),
    ),
    min_size=3,
    max_size=9,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_decisions_hold_their_categories_withdrawals_and_replay(
    exchange: Running, ops: list[tuple[Any, ...]]
) -> None:
    if "county" not in exchange.keys:  # the first example registers the consortium
        await consortium(exchange)
        await study(exchange, "county", "thc-east", "vc-peach", code="PROPERTY-STUDY")
    n = next(_serial)
    rid = resident(n)
    pid = str(exchange.rt.ledger.patient_id(rid))
    # Both the county and the township treat the patient; the village clinic does not.
    await accepted(exchange, "county", record_items(rid, f"cty-{n}")[1:])
    await accepted(exchange, "thc-east", record_items(rid, f"thc-{n}")[1:])
    consents: list[str] = []  # consent source ids, in order
    claims: dict[str, tuple[list[str], list[str] | None, bool]] = {}  # scope, categories, signed
    held_before: list[dict[str, tuple[list[str], list[str] | None, bool]]] = []
    withdrawn_before: list[tuple[int, set[str]]] = []  # (read no., consents withdrawn by then)
    withdrawn: set[str] = set()
    reads: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=exchange.url) as http:
        for k, op in enumerate(ops):
            if op[0] == "consent":
                item = consent_item(
                    rid, f"c-{n}-{k}", scope=op[1], purposes=["TREAT", "HRESCH"], signed=op[3]
                )
                if op[2] is not None:
                    item["payload"]["categories"] = op[2]
                await accepted(exchange, "thc-east", [item])
                consents.append(f"c-{n}-{k}")
                claims[f"c-{n}-{k}"] = (op[1], op[2], op[3])
            elif op[0] == "withdraw" and consents:
                target = consents[op[1] % len(consents)]
                if target not in withdrawn:
                    await accepted(
                        exchange,
                        "thc-east",
                        [
                            {
                                "source_id": f"w-{n}-{k}",
                                "kind": "consent_withdrawal",
                                "payload": {
                                    "patient": {"resident_id": rid},
                                    "consent": f"thc-east/{target}",
                                    "at": "2026-11-20T10:00:00+08:00",
                                },
                            }
                        ],
                    )
                    withdrawn.add(target)
            elif op[0] == "entry":
                make = {
                    "plain": lambda r, s: record_items(r, s)[3],
                    "hiv": hiv_test,
                    "psychiatric": depression,
                }[op[1]]
                await accepted(exchange, "county", [make(rid, f"e-{n}-{k}")])
            elif op[0] == "read":
                await exchange.settle()
                withdrawn_before.append((len(reads), set(withdrawn)))
                held_before.append({c: v for c, v in claims.items() if c not in withdrawn})
                headers = treat(exchange, "dr-x", op[1], purpose=op[2])
                if op[2] == "HRESCH":
                    headers["X-Research-Project"] = "PROPERTY-STUDY"
                reads.append(await http.get(f"/fhir/Patient/{pid}/$everything", headers=headers))
        ids = {
            sid: str(
                await exchange.rt.pool.fetchval(
                    "SELECT consent_id FROM consents WHERE source_id = $1", sid
                )
            )
            for sid in consents
        }
        for (index, gone), answer in zip(withdrawn_before, reads, strict=True):
            assert answer.status_code in (200, 403), answer.text
            record = await exchange.rt.pool.fetchval(
                "SELECT record_text::jsonb FROM audit_log "
                "WHERE record_text::jsonb->>'request_id' = $1",
                answer.headers["x-request-id"],
            )
            record = json.loads(record)
            if answer.status_code == 200:
                # Nothing outside the categories the decision let through.
                permitted = set(record["permitted"])
                shown = {
                    s["code"]
                    for e in answer.json()["entry"]
                    if e["search"]["mode"] == "match"
                    for s in e["resource"].get("meta", {}).get("security", [])
                    if s["system"] == "urn:county-hie:data-category"
                }
                assert shown <= permitted, (shown, permitted)
                # A member's word alone opens nothing beyond it, no sensitive category and no
                # research: what else was let through, a signed consent covering the reader
                # named.
                reader, purpose = record["institution"], record["purpose"]
                covering = [
                    (cats, signed)
                    for scope, cats, signed in held_before[index].values()
                    if "*" in scope or reader in scope
                ]
                if reader != "thc-east" or purpose == "HRESCH":
                    assert any(signed for _, signed in covering), (reader, purpose, covering)
                named = {c for cats, signed in covering if signed and cats for c in cats}
                assert permitted & set(SENSITIVE) <= named, (permitted, covering)
                # No decision after a withdrawal rests on the withdrawn consent.
                for sid in gone:
                    assert ids[sid] not in (record["legal_basis"] or "")
            again = await redecided(exchange, http, answer.headers["x-request-id"])
            assert again["same"], again
