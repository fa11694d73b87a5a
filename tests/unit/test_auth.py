"""Who is asking: hospital login tokens (JWS, second factor), routing between token kinds,
revoked tokens refused, and the issue time every identity now carries. Synthetic data only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoprofile import Profile, by_name
from exchange.auth.chain import (
    ChainAuthenticator,
    ExchangeTokens,
    HospitalLogin,
    Identity,
    RevokingAuthenticator,
    TokenError,
)
from exchange.auth.hospital_login import (
    InstitutionLogin,
    load_hospital_logins,
    parse_logins,
    verify_hospital_token,
)
from exchange.auth.tokens import TokenIssuer
from exchange.errors import ConfigurationError

NOW = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
AUDIENCE = "hie:test"
COUNTY_KEY = Ed25519PrivateKey.generate()
TOWNSHIP_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(params=["intl", "gm"])
def profile(request: pytest.FixtureRequest) -> Profile:
    """The consortium's crypto profile the exchange's own tokens are signed under."""
    return by_name(request.param)


LOGINS = {
    "county": InstitutionLogin((COUNTY_KEY.public_key(),)),
    "thc-east": InstitutionLogin((TOWNSHIP_KEY.public_key(),), frozenset({"physician"})),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(claims: dict[str, Any], key: Any = COUNTY_KEY, header: dict[str, Any] | None = None) -> str:
    """A JWS compact token as a hospital's login would make it with standard tools."""
    alg = "EdDSA" if isinstance(key, Ed25519PrivateKey) else "ES256"
    head = b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signed = f"{head}.{body}".encode()
    if isinstance(key, Ed25519PrivateKey):
        signature = key.sign(signed)
    else:  # JWS ES256 carries r || s, 32 bytes each, not DER
        r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": "county",
        "sub": "doctor-0042",
        "role": "physician",
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()) - 600,
        "exp": int(NOW.timestamp()) + 8 * 3600,
        "jti": "9f1c2e",
        "amr": ["pwd", "otp"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def verify(token: str, now: datetime = NOW) -> Identity:
    return verify_hospital_token(token, LOGINS, audience=AUDIENCE, now=now)


def refused(token: str, code: str, now: datetime = NOW) -> None:
    with pytest.raises(TokenError) as caught:
        verify(token, now)
    assert caught.value.code == code, str(caught.value)


# Hospital login tokens ---------------------------------------------------------------------------


def test_a_hospital_token_with_a_second_factor_names_person_institution_role_and_times() -> None:
    ident = verify(jws(claims()))
    assert (ident.person, ident.institution, ident.role) == ("doctor-0042", "county", "physician")
    # The exchange knows the token under the institution's name: two hospitals' ids never clash.
    assert ident.token_id == "county:9f1c2e"
    assert ident.issued_at == NOW - timedelta(minutes=10)
    assert ident.expires_at == NOW + timedelta(hours=8)


def test_an_es256_login_works_too_and_aud_may_be_a_list() -> None:
    ident = verify(jws(claims(iss="thc-east", aud=["his", AUDIENCE]), TOWNSHIP_KEY))
    assert ident.institution == "thc-east"


@pytest.mark.parametrize("key", [COUNTY_KEY, TOWNSHIP_KEY])
def test_a_token_made_by_a_standard_jwt_library_is_accepted(key: Any) -> None:
    # What a hospital's login would do with PyJWT (or any JOSE library), ES256 or EdDSA.
    iss = "county" if key is COUNTY_KEY else "thc-east"
    alg = "EdDSA" if key is COUNTY_KEY else "ES256"
    token = jwt.encode(claims(iss=iss), key, algorithm=alg)
    assert verify(token).institution == iss
    # ... and a signature in DER (not the r || s that JWS specifies) is refused.
    if key is TOWNSHIP_KEY:
        head, body, _ = token.split(".")
        der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        refused(f"{head}.{body}.{b64(der)}", "token.bad_signature")


@pytest.mark.parametrize("amr", [None, [], ["pwd"], ["pwd", "kba", "pin"], "otp", [{"otp": 1}]])
def test_without_a_second_factor_the_token_is_refused(amr: Any) -> None:
    refused(jws(claims(amr=amr)), "token.no_second_factor")


@pytest.mark.parametrize("factor", ["otp", "hwk", "sms", "mfa", "face", "fpt", "swk"])
def test_each_second_factor_is_accepted(factor: str) -> None:
    assert verify(jws(claims(amr=["pwd", factor]))).person == "doctor-0042"


def test_a_key_that_is_not_the_institutions_is_refused() -> None:
    # Signed with some other Ed25519 key, claiming the county hospital.
    refused(jws(claims(), Ed25519PrivateKey.generate()), "token.bad_signature")
    # The township centre cannot sign for the county hospital, nor the county for it.
    refused(jws(claims(iss="thc-east"), COUNTY_KEY, {"alg": "ES256"}), "token.bad_signature")
    # An institution with no configured login is not trusted at all.
    refused(jws(claims(iss="village-3")), "token.unknown_issuer")


def test_a_hospital_token_names_only_its_own_institution() -> None:
    refused(jws(claims(inst="thc-east")), "token.wrong_institution")
    assert verify(jws(claims(inst="county"))).institution == "county"


def test_expired_too_long_lived_and_future_tokens_are_refused() -> None:
    token = jws(claims())
    refused(token, "token.expired", NOW + timedelta(hours=8))
    assert verify(token, NOW + timedelta(hours=8) - timedelta(seconds=1))
    iat = int(NOW.timestamp())
    refused(jws(claims(iat=iat, exp=iat + 12 * 3600 + 1)), "token.too_long_lived")
    assert verify(jws(claims(iat=iat, exp=iat + 12 * 3600)))
    refused(jws(claims(iat=iat, exp=iat)), "token.too_long_lived")
    # Issued in the future: a little clock skew is tolerated, more is not.
    assert verify(jws(claims(iat=iat + 30)))
    refused(jws(claims(iat=iat + 120)), "token.not_yet_valid")
    refused(jws(claims(nbf=iat + 120)), "token.not_yet_valid")


def test_a_tampered_payload_is_refused() -> None:
    head, _, signature = jws(claims()).split(".")
    body = b64(json.dumps(claims(role="admin")).encode())
    refused(f"{head}.{body}.{signature}", "token.bad_signature")


def test_alg_none_hs256_and_a_foreign_alg_are_refused() -> None:
    body = b64(json.dumps(claims()).encode())
    # alg none with no signature, or with any signature.
    none = b64(json.dumps({"alg": "none"}).encode())
    refused(f"{none}.{body}.", "token.bad_algorithm")
    refused(f"{none}.{body}.{b64(b'x')}", "token.bad_algorithm")
    # HS256 keyed with the public key (the classic confusion): never HMAC, whatever the key.
    pem = COUNTY_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    mac = hmac.new(pem, f"{hs}.{body}".encode(), hashlib.sha256).digest()
    refused(f"{hs}.{body}.{b64(mac)}", "token.bad_algorithm")
    # ES256 claimed for an Ed25519 key, and a missing alg.
    refused(jws(claims(), COUNTY_KEY, {"alg": "ES256"}), "token.bad_algorithm")
    refused(jws(claims(), COUNTY_KEY, {"typ": "JWT"}), "token.bad_algorithm")


def test_a_key_in_the_header_is_never_used() -> None:
    forged = Ed25519PrivateKey.generate()
    raw = forged.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}}
    refused(jws(claims(), forged, header), "token.bad_signature")


def test_wrong_audience_and_roles_the_login_may_not_issue_are_refused() -> None:
    refused(jws(claims(aud="hospital-his")), "token.wrong_audience")
    refused(jws(claims(aud=None)), "token.wrong_audience")
    refused(jws(claims(aud=[])), "token.wrong_audience")
    # RFC 7519 §4.1.3: an array of strings; anything else is not an audience at all.
    refused(jws(claims(aud=[AUDIENCE, 7])), "token.wrong_audience")
    refused(jws(claims(aud={"aud": AUDIENCE})), "token.wrong_audience")
    refused(jws(claims(role="admin")), "token.role_not_allowed")
    refused(jws(claims(role="patient")), "token.role_not_allowed")
    refused(jws(claims(role=["physician"])), "token.role_not_allowed")
    refused(jws(claims(iss="thc-east", role="nurse"), TOWNSHIP_KEY), "token.role_not_allowed")


EDDSA, DUPLICATE_ALG = b'{"alg":"EdDSA"}', b'{"alg":"EdDSA","alg":"none"}'
COUNTY_CLAIMS = json.dumps(claims()).encode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "not a token.x.y",
        f"{b64(EDDSA)}.{b64(COUNTY_CLAIMS)}.sig+with/plain=base64",
        f"{b64(b'[1]')}.{b64(COUNTY_CLAIMS)}.{b64(b'x')}",
        f"{b64(DUPLICATE_ALG)}.{b64(COUNTY_CLAIMS)}.{b64(b'x')}",
        f"{b64(b'{}')}.{b64(b'not json')}.{b64(b'x')}",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    refused(token, "token.malformed")


@pytest.mark.parametrize("claim", ["sub", "jti", "iat", "exp"])
def test_each_required_claim_is_required(claim: str) -> None:
    refused(jws(claims(**{claim: None})), "token.malformed")
    refused(jws(claims(**{claim: True})), "token.malformed")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_changed_character_is_refused_or_changes_nothing(data: st.DataObject) -> None:
    token = jws(claims())
    at = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    )
    changed = token[:at] + char + token[at + 1 :]
    try:
        ident = verify(changed)
    except TokenError:
        return
    # Only base64url's unused trailing bits can change without changing the bytes.
    assert ident == verify(token)


# Configuration ---------------------------------------------------------------------------------


def pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_logins_toml_maps_institutions_to_keys_and_roles(tmp_path: Path) -> None:
    (tmp_path / "thc-east.pub.pem").write_text(pem(TOWNSHIP_KEY))
    (tmp_path / "logins.toml").write_text(f'''
audience = "{AUDIENCE}"
[institutions.county]
public_key = """{pem(COUNTY_KEY)}"""
roles = ["physician", "nurse"]
[institutions.thc-east]
public_key = {{ file = "thc-east.pub.pem" }}
''')
    login = load_hospital_logins(tmp_path, consortium="ignored", env={})
    assert login.audience == AUDIENCE
    assert login.logins["county"].roles == {"physician", "nurse"}
    assert (
        verify_hospital_token(
            jws(claims(iss="thc-east"), TOWNSHIP_KEY), login.logins, audience=AUDIENCE, now=NOW
        ).institution
        == "thc-east"
    )


def test_without_a_logins_file_no_hospital_is_trusted(tmp_path: Path) -> None:
    login = load_hospital_logins(tmp_path, consortium="c1", env={})
    assert login.logins == {} and login.audience == "hie:c1"
    with pytest.raises(ConfigurationError):  # a file named explicitly must exist
        load_hospital_logins(
            tmp_path, consortium="c1", env={"HIE_LOGINS_FILE": str(tmp_path / "missing.toml")}
        )


@pytest.mark.parametrize(
    "table",
    [
        {"patient": {"public_key": pem(COUNTY_KEY)}},
        {"county": {}},
        {"county": {"public_key": "not a key"}},
        {"county": {"public_key": pem(rsa.generate_private_key(65537, 2048))}},
        {"county": {"public_key": pem(ec.generate_private_key(ec.SECP384R1()))}},
        {"county": {"public_key": pem(COUNTY_KEY), "roles": ["patient"]}},
        # A hospital vouches for its clinicians, not for the consortium's regulators or admins.
        {"county": {"public_key": pem(COUNTY_KEY), "roles": ["regulator"]}},
        {"county": {"public_key": pem(COUNTY_KEY), "roles": ["physician", "admin"]}},
        {"county": {"public_key": pem(COUNTY_KEY), "roles": []}},
        {"county": {"public_key": [], "roles": ["nurse"]}},
    ],
)
def test_a_logins_file_that_cannot_work_fails_loudly(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        parse_logins({"institutions": table})


def test_two_keys_while_a_hospital_rotates() -> None:
    new = Ed25519PrivateKey.generate()
    logins = parse_logins({"institutions": {"county": {"public_key": [pem(COUNTY_KEY), pem(new)]}}})
    for key in (COUNTY_KEY, new):
        assert verify_hospital_token(jws(claims(), key), logins, audience=AUDIENCE, now=NOW)


# Routing and revocation -------------------------------------------------------------------------


async def test_the_chain_routes_by_shape(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    chain = ChainAuthenticator([ExchangeTokens(issuer), HospitalLogin(LOGINS, audience=AUDIENCE)])
    own, ident = issuer.issue(person="inspector-1", institution="bureau", role="regulator", now=NOW)
    assert await chain.authenticate(own, now=NOW) == ident
    hospital = await chain.authenticate(jws(claims()), now=NOW)
    assert hospital.token_id == "county:9f1c2e"
    # A hospital refusal keeps its own code; it is not retried as another kind.
    with pytest.raises(TokenError) as caught:
        await chain.authenticate(jws(claims(amr=["pwd"])), now=NOW)
    assert caught.value.code == "token.no_second_factor"
    with pytest.raises(TokenError) as caught:
        await chain.authenticate(own[:-4] + "AAAA", now=NOW)
    assert caught.value.code == "token.invalid"
    for junk in ("", "Basic abc", "a.b"):
        with pytest.raises(TokenError) as caught:
            await chain.authenticate(junk, now=NOW)
        assert caught.value.code == "token.unrecognised"


class Refusing:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def recognises(self, token: str) -> bool:
        self.asked.append(token)
        return token.startswith("x.")

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        raise TokenError("no", code="token.test")


async def test_the_first_member_that_recognises_decides_alone() -> None:
    first, second = Refusing(), HospitalLogin(LOGINS, audience=AUDIENCE)
    chain = ChainAuthenticator([first, second])
    with pytest.raises(TokenError, match="no"):
        await chain.authenticate("x.y.z", now=NOW)  # both would recognise it; the first decides
    assert (await chain.authenticate(jws(claims()), now=NOW)).institution == "county"


class Revoked:
    def __init__(self, token_ids: set[str]) -> None:
        self.token_ids = token_ids

    def is_revoked(self, identity: Identity) -> bool:
        return identity.token_id in self.token_ids


async def test_a_revoked_token_is_refused_with_its_code() -> None:
    auth = RevokingAuthenticator(HospitalLogin(LOGINS, audience=AUDIENCE), Revoked({"county:1"}))
    assert await auth.authenticate(jws(claims(jti="2")), now=NOW)
    with pytest.raises(TokenError) as caught:
        await auth.authenticate(jws(claims(jti="1")), now=NOW)
    assert caught.value.code == "token.revoked"


# The issue time on every identity ------------------------------------------------------------


def test_exchange_tokens_carry_their_issue_time_to_the_second(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    token, ident = issuer.issue(
        person="p", institution="i", role="nurse", now=NOW + timedelta(microseconds=700_000)
    )
    assert ident.issued_at == NOW
    assert issuer.verify(token, now=NOW).issued_at == NOW


def test_identities_built_without_a_token_still_work() -> None:
    ident = Identity("p", "i", "physician", NOW, "t1")
    assert ident.issued_at is None
    assert Identity("p", "i", "physician", NOW, "t1", issued_at=NOW).issued_at == NOW


def test_exchange_token_refusals_have_codes(profile: Profile) -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), profile)
    token, _ = issuer.issue(person="p", institution="i", role="nurse", now=NOW)
    with pytest.raises(TokenError) as caught:
        issuer.verify(token, now=NOW + timedelta(hours=9))
    assert caught.value.code == "token.expired"
    with pytest.raises(TokenError) as caught:
        TokenIssuer(secrets.token_bytes(32), profile).verify(token, now=NOW)
    assert caught.value.code == "token.invalid"


async def test_a_remembered_token_is_still_refused_once_it_expires(profile: Profile) -> None:
    from exchange.auth.chain import ExchangeTokens

    issuer = TokenIssuer(bytes(range(32)), profile)
    now = datetime(2026, 11, 29, 9, tzinfo=UTC)
    token, _ = issuer.issue(
        person="dr-li", institution="county", role="physician", now=now, ttl=timedelta(minutes=5)
    )
    tokens = ExchangeTokens(issuer)
    assert (await tokens.authenticate(token, now=now)).person == "dr-li"
    assert (await tokens.authenticate(token, now=now + timedelta(minutes=4))).person == "dr-li"
    with pytest.raises(TokenError, match="expired"):
        await tokens.authenticate(token, now=now + timedelta(minutes=5))
    # A token altered by one character is verified afresh, not taken from memory.
    with pytest.raises(TokenError):
        await tokens.authenticate(
            token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], now=now
        )
