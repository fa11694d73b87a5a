"""An exchange under each crypto profile takes submissions signed with its algorithm only:
one signed with the other profile's is rejected by name (``signature.profile``), a malformed
signature as such (``signature.malformed``), each answered with a receipt and kept in the audit
log like every rejected submission; and ``hie institution add`` registers only a key of the
profile (``key.profile``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.envelope import build_envelope, new_private_key
from cryptoprofile import GM, INTL, KeyProfileError, public_key_b64, public_key_pem
from exchange.cli.main import hie
from exchange.settings import Settings
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES, Running
from tests.integration.test_replays import codes, send

OTHER = {"intl": GM, "gm": INTL}


def signed(institution: str, key: Any, n: int) -> dict[str, Any]:
    return build_envelope(
        institution=institution,
        items=record_items(resident(n), f"sig-{n}"),
        key=key,
        sent_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_only_the_profiles_signatures_are_taken(
    exchange: Running, crypto_profile: str
) -> None:
    await exchange.register("thc-sig")
    # The institution's own key of the profile: accepted.
    accepted = await send(exchange, "thc-sig", signed("thc-sig", exchange.keys["thc-sig"], 61))
    assert accepted["status"] == "accepted", accepted

    # Signed with a key of the other profile's algorithm: rejected by name, not just invalid.
    other = signed("thc-sig", new_private_key(OTHER[crypto_profile]), 62)
    refused = await send(exchange, "thc-sig", other)
    assert refused["status"] == "rejected" and codes(refused) == ["signature.profile"]
    assert crypto_profile in refused["problems"][0]["message"]

    # Malformed: not base64, and (gm) DER cut short.
    bad = {**signed("thc-sig", exchange.keys["thc-sig"], 63), "signature": "not base64!"}
    assert codes(await send(exchange, "thc-sig", bad)) == ["signature.malformed"]
    if crypto_profile == "gm":
        doc = signed("thc-sig", exchange.keys["thc-sig"], 64)
        cut = base64.b64encode(base64.b64decode(doc["signature"])[:-3]).decode()
        assert codes(await send(exchange, "thc-sig", {**doc, "signature": cut})) == [
            "signature.malformed"
        ]

    # Kept like every rejected submission: the audit log holds each decision and its reason.
    rows = await exchange.rt.pool.fetch(
        "SELECT record_text FROM audit_log WHERE action = 'submission'"
    )
    records = [json.loads(r["record_text"]) for r in rows]
    reasons = {
        record["submission_id"]: [r["code"] for r in record["reasons"]] for record in records
    }
    assert reasons[other["submission_id"]] == ["signature.profile"]
    assert reasons[accepted["submission_id"]] == []

    # The exchange still takes the institution's own signatures afterwards.
    again = await send(exchange, "thc-sig", signed("thc-sig", exchange.keys["thc-sig"], 65))
    assert again["status"] == "accepted"


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_institution_add_takes_only_a_key_of_the_profile(
    exchange: Running, settings: Settings, tmp_path: Path, crypto_profile: str
) -> None:
    async def add(code: str, key_file: Path) -> Any:
        return await asyncio.to_thread(
            CliRunner().invoke,
            hie,
            [
                *("institution", "add", code, "--name", "测试卫生院"),
                *("--level", "township_health_centre", "--public-key", str(key_file)),
            ],
            obj=settings,
        )

    other = new_private_key(OTHER[crypto_profile])
    for form, data in {
        "pem": public_key_pem(other),
        "b64": public_key_b64(other).encode(),
    }.items():
        (tmp_path / form).write_bytes(data)
        refused = await add(f"thc-other-{form}", tmp_path / form)
        assert refused.exit_code == 2, refused.output
        assert "[key.profile]" in refused.output and crypto_profile in refused.output
    # A private key is not taken for a public one.
    (tmp_path / "private").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    )
    refused = await add("thc-private", tmp_path / "private")
    assert refused.exit_code == 2 and "[key.private]" in refused.output

    own = new_private_key(exchange.rt.settings.profile)
    (tmp_path / "own.pem").write_bytes(public_key_pem(own))
    added = await add("thc-own", tmp_path / "own.pem")
    assert added.exit_code == 0, added.output
    institution = await exchange.rt.sync(exchange.rt.ledger.institution, "thc-own")
    assert institution.public_key == public_key_b64(own)
    # Audited first, its fingerprint made with the audit log's hash and named by it.
    [text] = await exchange.rt.pool.fetch(
        "SELECT record_text FROM audit_log WHERE action = 'institution.add' "
        "AND record_text::jsonb->>'institution' = 'thc-own'"
    )
    record, hash_name = json.loads(text["record_text"]), settings.profile.hash_name
    raw = base64.b64decode(public_key_b64(own))
    assert record[f"key_{hash_name}"] == hashlib.new(hash_name, raw).hexdigest()
    assert f"key_{OTHER[crypto_profile].hash_name}" not in record
    assert await exchange.rt.sync(exchange.rt.ledger.institution, "thc-other-pem") is None
    exchange.keys["thc-own"] = own
    receipt = await send(exchange, "thc-own", signed("thc-own", own, 66))
    assert receipt["status"] == "accepted", receipt


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_the_ledger_holds_no_key_of_the_other_profile(
    exchange: Running, crypto_profile: str
) -> None:
    """The gateway reads the form a signature must have from the registered key's kind, so
    the ledger itself refuses the other profile's keys, whoever registers them."""
    ledger = exchange.rt.ledger
    other = public_key_b64(new_private_key(OTHER[crypto_profile]))
    with pytest.raises(KeyProfileError) as refused:
        await exchange.rt.sync(
            ledger.register_institution, "thc-x", "测试卫生院", "village_clinic", other
        )
    assert refused.value.code == "key.profile"
    assert await exchange.rt.sync(ledger.institution, "thc-x") is None
    await exchange.register("thc-x")
    with pytest.raises(KeyProfileError):
        await exchange.rt.sync(ledger.rotate_key, "thc-x", other)
    with pytest.raises(KeyProfileError) as malformed:
        await exchange.rt.sync(ledger.rotate_key, "thc-x", "bm90IGEga2V5")
    assert malformed.value.code == "key.malformed"
    held = await exchange.rt.sync(ledger.institution, "thc-x")
    assert held.public_key == public_key_b64(exchange.keys["thc-x"])
