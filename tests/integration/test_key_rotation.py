"""A member institution's key is rotated (it may have leaked): the running exchange refuses
the old key at once, without a restart, and accepts the new one; the rotation is audited
before it is made. And the ledger itself refuses a submission verified with a key that was
rotated between the gateway's check and the append."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.envelope import build_envelope, new_private_key, public_key_b64
from cryptoprofile import GM, INTL, public_key_pem
from domain.submission import validate_envelope
from exchange.cli.main import hie
from exchange.ingest.ledger import KEY_ROTATED, IntegrityError, Pending
from exchange.settings import Settings
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES, Running
from tests.integration.test_replays import send
from tests.integration.test_walking_skeleton import submit


def fingerprint_of(key: object, hash_name: str) -> str:
    """The registered public key's raw bytes, hashed: the audit record's fingerprint."""
    return hashlib.new(hash_name, base64.b64decode(public_key_b64(key))).hexdigest()


def pem_file(tmp_path: Path, key: object, name: str = "new") -> Path:
    """The public key's PEM (SubjectPublicKeyInfo, Ed25519 or SM2) in a file."""
    path = tmp_path / f"{name}.pub.pem"
    path.write_bytes(public_key_pem(key))
    return path


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_a_rotated_key_is_refused_at_once_and_the_new_one_works(
    exchange: Running, settings: Settings, tmp_path: Path
) -> None:
    await exchange.register("thc-rot")
    old = exchange.keys["thc-rot"]
    # The gateway has verified (and cached) the old key.
    assert (await submit(exchange, "thc-rot", record_items(resident(31), "r1")))[
        "status"
    ] == "accepted"

    new = new_private_key(settings.profile)
    result = await asyncio.to_thread(
        CliRunner().invoke,
        hie,
        [
            "institution",
            "rotate-key",
            "thc-rot",
            "--public-key",
            str(pem_file(tmp_path, new)),
            "--reason",
            "the old key may have leaked",
        ],
        obj=settings,
    )
    assert result.exit_code == 0, result.output
    assert "in force from ledger position" in result.output

    # At once, with the same running gateway: the old key signs nothing any more ...
    refused = await submit(exchange, "thc-rot", record_items(resident(32), "r2"))
    assert refused["status"] == "rejected"
    assert {p["code"] for p in refused["problems"]} <= {
        "signature.invalid",
        "signature.key_rotated",
    }
    # ... and a little later (the gateway has heard of the rotation) plainly so.
    await asyncio.sleep(0.5)
    again = await submit(exchange, "thc-rot", record_items(resident(33), "r3"))
    assert [p["code"] for p in again["problems"]] == ["signature.invalid"]
    # The new key works, for new records and for those refused under the old key, signed
    # again (their content-derived submission id unchanged: such a refusal is not final).
    exchange.keys["thc-rot"] = new
    accepted = await submit(exchange, "thc-rot", record_items(resident(34), "r4"))
    assert accepted["status"] == "accepted"
    resigned = build_envelope(
        institution="thc-rot",
        items=record_items(resident(32), "r2"),
        key=new,
        sent_at=datetime.now(UTC),
    )
    assert resigned["submission_id"] == refused["submission_id"]
    assert (await send(exchange, "thc-rot", resigned))["status"] == "accepted"
    assert old is not new

    # Audited, with who did it, why, and both keys' fingerprints.
    rows = await exchange.rt.pool.fetch(
        "SELECT record_text FROM audit_log WHERE action = 'institution.rotate_key'"
    )
    [record] = [json.loads(r["record_text"]) for r in rows]
    assert record["institution"] == "thc-rot" and record["operator"]
    assert record["reason"] == "the old key may have leaked"
    # Fingerprinted with the audit log's hash, in fields naming it (key_sha256 under intl,
    # key_sm3 under gm).
    hash_name = settings.profile.hash_name
    assert record[f"old_key_{hash_name}"] == fingerprint_of(old, hash_name)
    assert record[f"new_key_{hash_name}"] == fingerprint_of(new, hash_name)
    assert not [f for f in record if f.endswith("_sha256" if hash_name == "sm3" else "_sm3")]


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_rotate_key_refuses_what_cannot_work(
    exchange: Running, settings: Settings, tmp_path: Path, crypto_profile: str
) -> None:
    await exchange.register("thc-same")
    same = pem_file(tmp_path, exchange.keys["thc-same"])
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    # A key of the other profile: an SM2 key under intl, an Ed25519 key under gm.
    other_profile = GM if crypto_profile == "intl" else INTL
    other = pem_file(tmp_path, new_private_key(other_profile), "other")

    async def rotate(*argv: str) -> tuple[int, str]:
        result = await asyncio.to_thread(
            CliRunner().invoke, hie, ["institution", "rotate-key", *argv], obj=settings
        )
        return int(result.exit_code), str(result.output)

    assert (await rotate("thc-same", "--public-key", str(same)))[0] == 2  # already its key
    code, said = await rotate("thc-same", "--public-key", str(bad))
    assert code == 2 and "[key.malformed]" in said
    code, said = await rotate("thc-same", "--public-key", str(other))
    assert code == 2 and "[key.profile]" in said and crypto_profile in said
    assert (await rotate("nobody", "--public-key", str(same)))[0] == 2
    rows = await exchange.rt.pool.fetch(
        "SELECT 1 FROM audit_log WHERE action = 'institution.rotate_key'"
    )
    assert rows == []  # nothing was rotated, so nothing was recorded as rotated


async def test_the_ledger_refuses_a_submission_verified_before_a_rotation(
    exchange: Running,
) -> None:
    """The gateway verified the envelope with the key at version v; the key is rotated before
    the append. The ledger refuses it: by its own check, and, should the rotation commit after
    that check, in the append's commit itself (nothing is stored)."""
    await exchange.register("thc-race")
    ledger = exchange.rt.ledger
    version = (await exchange.rt.sync(ledger.institution, "thc-race")).version

    def pending(n: int) -> Pending:
        envelope = build_envelope(
            institution="thc-race",
            items=record_items(resident(40 + n), f"race-{n}"),
            key=exchange.keys["thc-race"],
            sent_at=datetime.now(UTC),
        )
        valid, problems = validate_envelope(envelope)
        assert valid is not None, problems
        return Pending(valid, json.dumps(envelope), datetime.now(UTC), version)

    first, second = pending(1), pending(2)
    profile = exchange.rt.settings.profile
    await exchange.rt.sync(ledger.rotate_key, "thc-race", public_key_b64(new_private_key(profile)))

    appended = await exchange.rt.sync(ledger.append, [first])
    assert appended.refused == {first.key: [KEY_ROTATED]} and not appended.positions

    # The real race: a rotation waits for the ledger's table lock first, then an append that
    # checked the key before the rotation committed waits behind it. Both wait on a lock the
    # test holds; PostgreSQL grants it in the order asked.
    events = ledger.tables[0]
    third = await exchange.rt.sync(ledger.institution, "thc-race")
    racing = replace(second, key_version=third.version)

    async def waiting(n: int) -> None:
        for _ in range(500):
            found = await exchange.rt.pool.fetchval(
                "SELECT count(*) FROM pg_locks WHERE relation = $1::regclass AND NOT granted",
                events,
            )
            if found >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("nobody waited for the ledger's lock")

    async with exchange.owner() as holder:
        async with holder.transaction():
            await holder.execute(f'LOCK TABLE "{events}" IN EXCLUSIVE MODE')
            rotation = asyncio.ensure_future(
                exchange.rt.sync(
                    ledger.rotate_key, "thc-race", public_key_b64(new_private_key(profile))
                )
            )
            await waiting(1)
            append = asyncio.ensure_future(exchange.rt.sync(ledger.append, [racing]))
            await waiting(2)  # past its own check (the key was current then), now queued
        await rotation
        with pytest.raises(IntegrityError):
            await append
    assert await exchange.rt.sync(ledger.positions_of, [racing.key]) == {}
