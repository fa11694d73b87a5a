"""Revoking tokens on the real PostgreSQL: one token, or every token a person held, refused
by a running exchange within moments; audited by `hie token revoke`, or not done at all."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cryptoprofile import by_name
from domain.identity import patient_id_for
from domain.resident_id import ResidentId
from exchange.auth.chain import (
    ChainAuthenticator,
    ExchangeTokens,
    HospitalLogin,
    Identity,
    Revocations,
    RevocationUnavailable,
    RevokingAuthenticator,
    TokenError,
)
from exchange.auth.hospital_login import InstitutionLogin
from exchange.auth.tokens import TokenIssuer
from exchange.cli.main import hie
from exchange.database import migrate_stored_tables
from exchange.settings import Settings

T = datetime.now(UTC).replace(microsecond=0)  # the moment of the revocations in these stories
# The hospital's own sign-in key: Ed25519 under either crypto profile, since a hospital's
# login keys are its own choice (exchange/auth/hospital_login.py), not the consortium's profile.
HOSPITAL_KEY = Ed25519PrivateKey.generate()
RESIDENT = "11010519491231002X"  # a synthetic, valid resident ID


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hospital_token(jti: str, person: str, issued: datetime) -> str:
    head = b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    body = b64(
        json.dumps(
            {
                "iss": "county",
                "sub": person,
                "role": "nurse",
                "aud": "hie:t",
                "iat": int(issued.timestamp()),
                "exp": int((issued + timedelta(hours=8)).timestamp()),
                "jti": jti,
                "amr": ["pwd", "otp"],
            }
        ).encode()
    )
    return f"{head}.{body}.{b64(HOSPITAL_KEY.sign(f'{head}.{body}'.encode()))}"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def watching(pool: asyncpg.Pool) -> AsyncIterator[Revocations]:
    """The running exchange's list. It polls only every minute here, so a test that sees a
    revocation sooner saw it through LISTEN/NOTIFY."""
    revocations = Revocations(pool, poll_seconds=60, stale_after=120)
    await migrate_stored_tables(pool)
    await revocations.start()
    yield revocations
    await revocations.close()


async def until_refused(
    auth: RevokingAuthenticator, token: str, now: datetime, within: float = 3.0
) -> float:
    """Seconds until ``token`` is refused as revoked (fails after ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            await auth.authenticate(token, now=now)
        except TokenError as exc:
            assert exc.code == "token.revoked"
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"still accepted after {within} s")


async def test_revoked_tokens_and_cut_off_people_are_refused(
    pool: asyncpg.Pool, watching: Revocations, crypto_profile: str
) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), by_name(crypto_profile))
    auth = RevokingAuthenticator(
        ChainAuthenticator(
            [
                ExchangeTokens(issuer),
                HospitalLogin(
                    {"county": InstitutionLogin((HOSPITAL_KEY.public_key(),))}, audience="hie:t"
                ),
            ]
        ),
        watching,
    )
    # An hour before: two doctors get the exchange's tokens, a nurse signs in at the hospital.
    early = T - timedelta(hours=1)
    liu, _ = issuer.issue(person="doctor-liu", institution="county", role="physician", now=early)
    wang, _ = issuer.issue(person="doctor-wang", institution="county", role="physician", now=early)
    nurse = hospital_token("a1b2", "nurse-zhao", early)
    for token in (liu, wang, nurse):
        assert await auth.authenticate(token, now=T)

    # An administrator (another process, like `hie token revoke`) revokes doctor Liu's token.
    admin = Revocations(pool)
    assert await admin.revoke_token(issuer.verify(liu, now=T).token_id, at=T, reason="lost")
    took = await until_refused(auth, liu, T)
    assert took < 1.0  # notified, not polled
    assert not await admin.revoke_token(issuer.verify(liu, now=T).token_id, at=T)  # once only
    # ... and the hospital's token, by the name the exchange knows it under.
    await admin.revoke_token("county:a1b2", at=T)
    await until_refused(auth, nurse, T)
    assert await auth.authenticate(wang, now=T)  # the others still work

    # Doctor Wang leaves at `cut`: every token issued before it is refused, a later one works.
    cut = T + timedelta(milliseconds=700)
    await admin.revoke_person("doctor-wang", before=cut)
    await until_refused(auth, wang, T)
    after = T + timedelta(seconds=2)
    later, _ = issuer.issue(
        person="doctor-wang",
        institution="county",
        role="physician",
        now=T + timedelta(seconds=1, milliseconds=200),
    )
    assert (await auth.authenticate(later, now=after)).person == "doctor-wang"
    # A token keeps its issue time to the second, so within the cut's own second every token
    # is refused, even one issued just after it: a wrong refusal, never a wrong permit.
    for ms in (300, 900):
        same_second, _ = issuer.issue(
            person="doctor-wang",
            institution="county",
            role="physician",
            now=T + timedelta(milliseconds=ms),
        )
        with pytest.raises(TokenError):
            await auth.authenticate(same_second, now=after)
    # An earlier cut-off does not undo a later one.
    await admin.revoke_person("doctor-wang", before=T - timedelta(days=1))
    await watching.refresh()
    with pytest.raises(TokenError):
        await auth.authenticate(wang, now=T)


async def test_a_lost_listening_connection_is_replaced(
    pool: asyncpg.Pool, watching: Revocations, crypto_profile: str
) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), by_name(crypto_profile))
    auth = RevokingAuthenticator(ExchangeTokens(issuer), watching)
    token, ident = issuer.issue(person="doctor-li", institution="thc", role="physician", now=T)
    # The listening connection is killed (a restarted server, a network cut) ...
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )
    assert killed == 1
    await asyncio.sleep(0.3)
    # ... and a revocation made after that still reaches the exchange without waiting a poll.
    await Revocations(pool).revoke_token(ident.token_id, at=T)
    await until_refused(auth, token, T)


async def test_an_unloaded_or_stale_list_refuses_rather_than_trusts(
    pool: asyncpg.Pool, crypto_profile: str
) -> None:
    revocations = Revocations(pool, stale_after=0.2)
    await migrate_stored_tables(pool)
    ident = TokenIssuer(secrets.token_bytes(32), by_name(crypto_profile)).issue(
        person="p", institution="i", role="nurse", now=T
    )[1]
    with pytest.raises(RevocationUnavailable):  # never loaded
        revocations.is_revoked(ident)
    await revocations.refresh()
    assert revocations.is_revoked(ident) is False
    await asyncio.sleep(0.3)  # not followed, so it grows stale
    with pytest.raises(RevocationUnavailable):
        revocations.is_revoked(ident)


async def test_old_revocations_are_not_held_in_memory(watching: Revocations) -> None:
    # Every token lives at most 12 hours: a revocation from two days ago refuses nothing.
    await watching.revoke_token("old", at=T - timedelta(days=2))
    await watching.revoke_token("new", at=T)
    await watching.refresh()
    ident = Identity("p", "i", "nurse", T + timedelta(hours=1), "x", T)
    assert not watching.is_revoked(replace(ident, token_id="old"))
    assert watching.is_revoked(replace(ident, token_id="new"))


# The command line ----------------------------------------------------------------------------


async def hie_token(settings: Settings, *argv: str) -> Result:
    """`hie token ARGV...` with these settings (in a thread: the command runs its own loop)."""
    return await asyncio.to_thread(CliRunner().invoke, hie, ["token", *argv], obj=settings)


async def test_hie_token_revoke_is_audited_or_not_done(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # `hie token revoke --token-id` records the revocation and the admin action together.
    assert (
        await hie_token(settings, "revoke", "--token-id", "abc123", "--reason", "device lost")
    ).exit_code == 0
    assert (
        await pool.fetchval("SELECT reason FROM revoked_tokens WHERE token_id = 'abc123'")
        == "device lost"
    )
    record = json.loads(
        await pool.fetchval("SELECT record_text FROM audit_log WHERE action = 'token.revoke'")
    )
    assert record["token_id"] == "abc123" and record["reason"] == "device lost"
    assert record["operator"]
    # `--person` cuts off every token the person holds now.
    assert (await hie_token(settings, "revoke", "--person", "doctor-wu")).exit_code == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM revoked_persons WHERE person = 'doctor-wu'") == 1
    )
    # When the audit log cannot record it, nothing is revoked.
    await pool.execute(
        "ALTER TABLE audit_log ADD CONSTRAINT no_more_revokes "
        "CHECK (action <> 'token.revoke') NOT VALID"
    )
    refused = await hie_token(settings, "revoke", "--token-id", "def456")
    assert refused.exit_code == 1 and "nothing was revoked" in refused.stderr
    assert await pool.fetchval("SELECT count(*) FROM revoked_tokens WHERE token_id = 'def456'") == 0


async def test_hie_token_for_a_patient_names_the_regional_id(settings: Settings) -> None:
    # A patient's token is bound to the regional id, and to no institution but "patient".
    out = await hie_token(settings, "--role", "patient", "--patient", RESIDENT)
    assert out.exit_code == 0, out.stderr
    ident = TokenIssuer(settings.secrets.token_key, settings.profile).verify(
        out.stdout.strip(), now=datetime.now(UTC)
    )
    expected = str(patient_id_for(ResidentId(RESIDENT), settings.secrets.pseudonym_key))
    assert (ident.person, ident.institution, ident.role) == (expected, "patient", "patient")
    assert RESIDENT not in out.stdout + out.stderr
    # The patient role needs --patient; --patient needs the patient role; a bad ID is refused.
    for argv in (
        ["--role", "patient", "--person", "x", "--institution", "patient"],
        ["--role", "physician", "--patient", RESIDENT, "--person", "x", "--institution", "y"],
        ["--role", "patient", "--patient", "340524198001010013"],
        ["revoke", "--token-id", "a", "--person", "b"],
        ["revoke", "--role", "admin", "--person", "b"],
    ):
        refused = await hie_token(settings, *argv)
        assert refused.exit_code == 2, argv
        assert "340524198001010013" not in refused.stderr
    # The other roles work as before.
    assert (
        await hie_token(
            settings, "--person", "inspector-2", "--institution", "bureau", "--role", "regulator"
        )
    ).exit_code == 0
