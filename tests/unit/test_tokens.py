"""The exchange's own bearer tokens: standard JWTs (EdDSA under the intl profile, SM2 under
gm), expiring, bound to person, institution and role; forged, altered, confused and
old-format tokens refused. Tests taking ``profile`` run under both profiles."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cryptoprofile import INTL, Profile, by_name
from exchange.auth import jose
from exchange.auth.chain import ChainAuthenticator, ExchangeTokens, HospitalLogin
from exchange.auth.tokens import Identity, TokenError, TokenIssuer

NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)
SEED = bytes(range(32))


@pytest.fixture(params=["intl", "gm"])
def profile(request: pytest.FixtureRequest) -> Profile:
    return by_name(request.param)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def refused(issuer: TokenIssuer, token: str, code: str, now: datetime = NOW) -> TokenError:
    with pytest.raises(TokenError) as caught:
        issuer.verify(token, now=now)
    assert caught.value.code == code, str(caught.value)
    return caught.value


def signed(
    claims: dict[str, Any], seed: bytes = SEED, profile: Profile = INTL, **header: Any
) -> str:
    """A JWT signed with the exchange's key, headers as given: by the standard library
    (EdDSA), or for SM2 through the exchange's JOSE door (no library knows SM2)."""
    if profile is INTL:
        key = Ed25519PrivateKey.from_private_bytes(seed)
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "hie+jwt", **header})
    return jose.encode(claims, profile.key_from_seed(seed), headers={"typ": "hie+jwt", **header})


def good_claims(**changes: Any) -> dict[str, Any]:
    base = {
        "sub": "doctor-1",
        "inst": "county",
        "role": "physician",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 3600,
        "jti": "ab12",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_token_round_trips_and_expires(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    token, ident = issuer.issue(person="doctor-1", institution="county", role="physician", now=NOW)
    assert issuer.verify(token, now=NOW + timedelta(hours=1)) == ident
    assert issuer.verify(token, now=NOW + timedelta(hours=8, seconds=-1)) == ident
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(token, now=NOW + timedelta(hours=8))
    refused(issuer, token, "token.expired", NOW + timedelta(hours=8))


def test_a_token_is_a_standard_jwt_any_library_can_check() -> None:
    # The header and claims are the JWT ones, readable with the public key alone.
    issuer = TokenIssuer(SEED, INTL)
    token, ident = issuer.issue(
        person="doctor-1", institution="county", role="nurse", now=NOW, ttl=timedelta(hours=2)
    )
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    assert jwt.get_unverified_header(token) == {
        "alg": "EdDSA",
        "typ": "hie+jwt",
        "kid": issuer.key_id,
    }
    claims = jwt.decode(token, public, algorithms=["EdDSA"], options={"verify_exp": False})
    assert claims == {
        "sub": "doctor-1",
        "inst": "county",
        "role": "nurse",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 7200,
        "jti": ident.token_id,
    }


def test_the_key_id_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037 appendix A: the Ed25519 example key and its thumbprint (A.3).
    seed = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    assert TokenIssuer(seed, INTL).key_id == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_another_exchange_or_a_changed_claim_is_refused(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    token, _ = issuer.issue(person="p", institution="i", role="patient", now=NOW)
    # Another exchange's key (or this exchange's before its key changed).
    refused(TokenIssuer(secrets.token_bytes(32), profile), token, "token.invalid")
    # A payload swapped for one naming another role, the signature kept.
    head, _, signature = token.split(".")
    body = segment(good_claims(sub="p", inst="i", role="admin"))
    refused(issuer, f"{head}.{body}.{signature}", "token.invalid")
    prefix, body, sig = token.split(".")
    refused(issuer, f"{prefix}.{body[:-2]}xx.{sig}", "token.invalid")
    for junk in ("not a token", "", "a.b.c", token + ".x"):
        refused(issuer, junk, "token.invalid")


def test_only_eddsa_with_the_exchanges_key_is_accepted() -> None:
    issuer = TokenIssuer(SEED, INTL)
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    body = segment(good_claims())
    # HS256 keyed with the public key, as PEM or raw bytes: the classic confusion.
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ):
        head = segment({"alg": "HS256", "typ": "hie+jwt", "kid": issuer.key_id})
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        refused(issuer, f"{head}.{body}.{b64(mac)}", "token.invalid")
    # alg none, with and without a signature.
    none = segment({"alg": "none", "typ": "hie+jwt", "kid": issuer.key_id})
    refused(issuer, f"{none}.{body}.", "token.invalid")
    refused(issuer, f"{none}.{body}.{b64(b'x')}", "token.invalid")
    # The right key but not this token type (a JWT minted for something else).
    assert issuer.verify(signed(good_claims()), now=NOW).person == "doctor-1"
    refused(issuer, signed(good_claims(), typ="JWT"), "token.invalid")


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": None},
        {"inst": None},
        {"role": None},
        {"jti": None},
        {"iat": None},
        {"exp": None},
        {"sub": ""},
        {"inst": 7},
        {"exp": True},
        {"iat": "now"},
        {"exp": 1e30},
    ],
)
def test_a_claim_missing_or_of_the_wrong_kind_is_refused(
    changes: dict[str, Any], profile: Profile
) -> None:
    issuer = TokenIssuer(SEED, profile)
    assert issuer.verify(signed(good_claims(), profile=profile), now=NOW).person == "doctor-1"
    refused(issuer, signed(good_claims(**changes), profile=profile), "token.invalid")


def test_a_role_the_exchange_does_not_know_is_refused(profile: Profile) -> None:
    token = signed(good_claims(role="superuser"), profile=profile)
    refused(TokenIssuer(SEED, profile), token, "token.unknown_role")


def hie1_token(seed: bytes) -> str:
    """A token in the exchange's earlier format, as `hie token` made it before JWTs."""
    claims = {
        "sub": "doctor-1",
        "inst": "county",
        "role": "physician",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 3600,
        "jti": "ab12",
    }
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(f"hie1.{body}".encode())
    return f"hie1.{body}.{b64(signature)}"


async def test_an_old_format_token_is_refused_with_what_to_do(profile: Profile) -> None:
    # Validly signed by this very exchange, but in the old format: refused all the same.
    issuer = TokenIssuer(SEED, profile)
    error = refused(issuer, hie1_token(SEED), "token.old_format")
    assert "hie token" in error.message
    # Through the chain (as the read API asks), it reaches the exchange's own tokens, not
    # the hospital logins, and keeps its code.
    chain = ChainAuthenticator([ExchangeTokens(issuer), HospitalLogin({}, audience="hie:t")])
    with pytest.raises(TokenError) as caught:
        await chain.authenticate(hie1_token(SEED), now=NOW)
    assert caught.value.code == "token.old_format"


async def test_the_chain_sends_any_exchange_token_to_the_exchange(profile: Profile) -> None:
    # A token of this type signed by another key is the exchange's to refuse (token.invalid,
    # "get a new one"), not a hospital login's with an unknown issuer.
    chain = ChainAuthenticator(
        [ExchangeTokens(TokenIssuer(SEED, profile)), HospitalLogin({}, audience="hie:t")]
    )
    other, _ = TokenIssuer(secrets.token_bytes(32), profile).issue(
        person="p", institution="i", role="nurse", now=NOW
    )
    with pytest.raises(TokenError) as caught:
        await chain.authenticate(other, now=NOW)
    assert caught.value.code == "token.invalid"
    assert "hie token" in caught.value.message


async def test_a_verified_token_is_not_verified_again(profile: Profile) -> None:
    # Signature checks are most of authentication's cost: a token seen once is remembered.
    issuer = TokenIssuer(SEED, profile)
    token, ident = issuer.issue(person="dr-li", institution="county", role="physician", now=NOW)
    calls: list[str] = []

    class Counting(TokenIssuer):
        def verify(self, token: str, *, now: datetime) -> Identity:
            calls.append(token)
            return super().verify(token, now=now)

    tokens = ExchangeTokens(Counting(SEED, profile))
    for minutes in (0, 1, 2):
        assert tokens.recognises(token)
        assert await tokens.authenticate(token, now=NOW + timedelta(minutes=minutes)) == ident
    assert calls == [token]
    with pytest.raises(TokenError) as caught:  # still refused once it expires
        await tokens.authenticate(token, now=NOW + timedelta(hours=8))
    assert caught.value.code == "token.expired"


def test_roles_and_lifetimes_are_bounded(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    with pytest.raises(TokenError):
        issuer.issue(person="p", institution="i", role="superuser", now=NOW)
    with pytest.raises(TokenError):
        issuer.issue(person="p", institution="i", role="admin", now=NOW, ttl=timedelta(days=2))
    with pytest.raises(TokenError):
        issuer.issue(person="", institution="i", role="admin", now=NOW)
