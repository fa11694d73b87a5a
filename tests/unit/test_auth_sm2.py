"""SM2 bearer tokens (the gm crypto profile): the exchange's own, signed ``"alg": "SM2"`` with
a raw r || s signature, refused under the intl profile and the reverse; and hospital logins
with an SM2 key, checked against signatures the ``openssl`` command line makes (with the
standard user id, and with another one, which must not verify). Synthetic data only."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoprofile import GM, INTL, by_name, public_key_pem
from cryptoprofile.sm2 import ORDER, SM2PrivateKey
from exchange.auth import jose
from exchange.auth.hospital_login import parse_logins, verify_hospital_token
from exchange.auth.tokens import TokenError, TokenIssuer
from exchange.errors import ConfigurationError
from tests.unit.test_auth import claims

NOW = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
SEED = bytes(range(32))
AUDIENCE = "hie:test"
USER_ID = "1234567812345678"


@pytest.fixture(scope="module", autouse=True)
def gm_profile_self_tested() -> None:
    by_name("gm")  # the gm profile's known-answer tests, as an exchange runs them at start


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def refused(issuer: TokenIssuer, token: str, code: str, now: datetime = NOW) -> TokenError:
    with pytest.raises(TokenError) as caught:
        issuer.verify(token, now=now)
    assert caught.value.code == code, str(caught.value)
    return caught.value


def with_signature(token: str, signature: bytes) -> str:
    head, body, _ = token.split(".")
    return f"{head}.{body}.{b64(signature)}"


# The exchange's own tokens under gm ---------------------------------------------------------


def test_an_sm2_token_round_trips_and_expires() -> None:
    issuer = TokenIssuer(secrets.token_bytes(32), GM)
    token, ident = issuer.issue(person="doctor-1", institution="county", role="physician", now=NOW)
    assert issuer.verify(token, now=NOW + timedelta(hours=1)) == ident
    assert issuer.verify(token, now=NOW + timedelta(hours=8, seconds=-1)) == ident
    refused(issuer, token, "token.expired", NOW + timedelta(hours=8))


def test_an_sm2_token_is_a_jws_with_r_and_s_that_sm2_itself_verifies() -> None:
    # Checked apart from the JOSE code: the signature is r || s, and r, s as DER verify with
    # the SM2 key over the JWS signing input (SM3, the standard user id).
    issuer = TokenIssuer(SEED, GM)
    token, ident = issuer.issue(person="doctor-1", institution="county", role="nurse", now=NOW)
    head, body, signature = token.split(".")
    assert jwt.get_unverified_header(token) == {
        "alg": "SM2",
        "typ": "hie+jwt",
        "kid": issuer.key_id,
    }
    assert json.loads(unb64(body))["jti"] == ident.token_id
    raw = unb64(signature)
    assert len(raw) == 64
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    public = SM2PrivateKey.from_seed(SEED).public_key()
    assert public.verifies(encode_dss_signature(r, s), f"{head}.{body}".encode())
    assert not public.verifies(encode_dss_signature(r, s), f"{head}.{body}x".encode())


def test_the_sm2_key_id_is_the_sm3_thumbprint_of_its_ec_jwk() -> None:
    point = SM2PrivateKey.from_seed(SEED).public_key().point()
    canonical = (
        f'{{"crv":"SM2","kty":"EC","x":"{b64(point[1:33])}","y":"{b64(point[33:])}"}}'
    ).encode()
    expected = b64(hashlib.new("sm3", canonical).digest())
    assert TokenIssuer(SEED, GM).key_id == expected
    # The same seed under intl is another key, with another id.
    assert TokenIssuer(SEED, INTL).key_id != expected


def test_a_token_of_one_profile_is_refused_under_the_other() -> None:
    # Same secret, both profiles: neither accepts the other's token, and says why.
    gm, intl = TokenIssuer(SEED, GM), TokenIssuer(SEED, INTL)
    gm_token, _ = gm.issue(person="p", institution="i", role="nurse", now=NOW)
    intl_token, _ = intl.issue(person="p", institution="i", role="nurse", now=NOW)
    error = refused(intl, gm_token, "token.invalid")
    assert "signed SM2" in error.message and "intl" in error.message
    error = refused(gm, intl_token, "token.invalid")
    assert "signed EdDSA" in error.message and "gm" in error.message
    # A header relabelled to the verifier's algorithm, the signature kept: still refused.
    gm_head, gm_body, gm_sig = gm_token.split(".")
    relabelled = b64(json.dumps({"alg": "EdDSA", "typ": "hie+jwt"}).encode())
    refused(intl, f"{relabelled}.{gm_body}.{gm_sig}", "token.invalid")
    intl_head, intl_body, intl_sig = intl_token.split(".")
    relabelled = b64(json.dumps({"alg": "SM2", "typ": "hie+jwt"}).encode())
    refused(gm, f"{relabelled}.{intl_body}.{intl_sig}", "token.invalid")
    # An SM2 header with an Ed25519 signature of the right length (64 bytes), or an
    # EdDSA one with SM2's r || s: both signatures are 64 bytes, neither verifies.
    refused(gm, f"{gm_head}.{gm_body}.{intl_sig}", "token.invalid")
    refused(intl, f"{intl_head}.{intl_body}.{gm_sig}", "token.invalid")


def test_a_tampered_sm2_token_is_refused() -> None:
    issuer = TokenIssuer(SEED, GM)
    token, _ = issuer.issue(person="p", institution="i", role="nurse", now=NOW)
    head, body, signature = token.split(".")
    claims = json.loads(unb64(body))
    claims["role"] = "admin"
    refused(issuer, f"{head}.{b64(json.dumps(claims).encode())}.{signature}", "token.invalid")
    raw = bytearray(unb64(signature))
    raw[40] ^= 1
    refused(issuer, with_signature(token, bytes(raw)), "token.invalid")
    # Another gm exchange's key.
    refused(TokenIssuer(secrets.token_bytes(32), GM), token, "token.invalid")


def test_a_malformed_sm2_signature_is_refused_not_a_crash() -> None:
    issuer = TokenIssuer(SEED, GM)
    token, _ = issuer.issue(person="p", institution="i", role="nurse", now=NOW)
    raw = unb64(token.split(".")[2])
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    der = encode_dss_signature(r, s)
    # The very signature, but as OpenSSL's DER rather than JWS's r || s.
    assert (
        SM2PrivateKey.from_seed(SEED).public_key().verifies(der, token.rsplit(".", 1)[0].encode())
    )
    for bad in (
        der,
        der[:-1],
        raw[:63],
        raw + b"\x00",
        b"",
        bytes(64),
        ORDER.to_bytes(32, "big") + raw[32:],  # r = n: out of range
        b"\xff" * 64,
        raw[32:] + raw[:32],
    ):
        refused(issuer, with_signature(token, bad), "token.invalid")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_any_bytes_as_an_sm2_signature_are_refused(signature: bytes) -> None:
    issuer = TokenIssuer(SEED, GM)
    token, _ = issuer.issue(person="p", institution="i", role="nurse", now=NOW)
    refused(issuer, with_signature(token, signature), "token.invalid")


def test_the_jose_door_pins_sm2_to_sm2_keys() -> None:
    key = SM2PrivateKey.from_seed(SEED)
    token = jose.encode({"sub": "p"}, key, headers={"typ": "hie+jwt"})
    assert jose.decode(token, key.public_key()) == {"sub": "p"}
    # An Ed25519 key is never used for an SM2 header, nor an SM2 key for an EdDSA one.
    with pytest.raises(jose.JoseError):
        jose.decode(token, Ed25519PrivateKey.generate().public_key())
    ed_token = jose.encode({"sub": "p"}, Ed25519PrivateKey.generate(), headers={})
    with pytest.raises(jose.JoseError):
        jose.decode(ed_token, key.public_key())
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode({"sub": "p"}, Ed25519PrivateKey.generate(), algorithm="SM2")


# Hospital logins with an SM2 key --------------------------------------------------------------


def openssl(*argv: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *argv], input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def sm2_login(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An SM2 key made by ``openssl genpkey`` (its file) and its public key's PEM."""
    key = tmp_path_factory.mktemp("sm2") / "login.pem"
    key.write_bytes(openssl("genpkey", "-algorithm", "SM2"))
    return key, openssl("pkey", "-in", str(key), "-pubout").decode()


def hospital_claims(**changes: Any) -> dict[str, Any]:
    """The hospital login's claims the Ed25519 and P-256 tests use (tests/unit/test_auth.py)."""
    return claims(**changes)


def openssl_signed(
    key: Path, user_id: str = USER_ID, *, alg: str = "SM2", der: bool = False, **changes: Any
) -> str:
    """A JWS as a hospital's login would make it with the openssl command line: SM2 with SM3
    under ``user_id`` over the signing input, DER turned into r || s (unless ``der``)."""
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(hospital_claims(**changes)).encode())
    message = key.parent / "signing-input"
    message.write_bytes(f"{head}.{body}".encode())
    signature = openssl(
        "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", f"distid:{user_id}",
        "-inkey", str(key), "-in", str(message),
    )  # fmt: skip
    if not der:
        signature = jose.sm2_jws_signature(signature)
    return f"{head}.{body}.{b64(signature)}"


def test_a_hospital_login_with_an_sm2_key_is_accepted(sm2_login: tuple[Path, str]) -> None:
    key, pem = sm2_login
    logins = parse_logins({"institutions": {"county": {"public_key": pem}}})
    ident = verify_hospital_token(openssl_signed(key), logins, audience=AUDIENCE, now=NOW)
    assert (ident.person, ident.institution, ident.token_id) == (
        "doctor-0042",
        "county",
        "county:9f1c2e",
    )
    # The login's key decides, whatever the consortium's profile: an SM2 login and an
    # Ed25519 one side by side (a hospital rotating from one to the other).
    ed = Ed25519PrivateKey.generate()
    both = parse_logins(
        {"institutions": {"county": {"public_key": [pem, public_key_pem(ed).decode()]}}}
    )
    assert verify_hospital_token(openssl_signed(key), both, audience=AUDIENCE, now=NOW)
    ed_token = jwt.encode(hospital_claims(), ed, algorithm="EdDSA")
    assert verify_hospital_token(ed_token, both, audience=AUDIENCE, now=NOW)


def test_an_sm2_signature_under_another_user_id_is_refused(sm2_login: tuple[Path, str]) -> None:
    key, pem = sm2_login
    logins = parse_logins({"institutions": {"county": {"public_key": pem}}})
    for user_id in ("1234567812345679", "ALICE123@YAHOO.COM"):
        with pytest.raises(TokenError) as caught:
            verify_hospital_token(openssl_signed(key, user_id), logins, audience=AUDIENCE, now=NOW)
        assert caught.value.code == "token.bad_signature"


def test_an_sm2_hospital_token_of_the_wrong_form_is_refused(sm2_login: tuple[Path, str]) -> None:
    key, pem = sm2_login
    logins = parse_logins({"institutions": {"county": {"public_key": pem}}})

    def code(token: str) -> str:
        with pytest.raises(TokenError) as caught:
            verify_hospital_token(token, logins, audience=AUDIENCE, now=NOW)
        return caught.value.code

    # OpenSSL's DER signature as it comes, not r || s.
    assert code(openssl_signed(key, der=True)) == "token.bad_signature"
    good = openssl_signed(key)
    head, body, signature = good.split(".")
    assert code(f"{head}.{body}.{b64(unb64(signature)[:-1])}") == "token.bad_signature"
    assert code(f"{head}.{body}.{b64(bytes(64))}") == "token.bad_signature"
    # The header may not pick another algorithm than the key's.
    assert code(openssl_signed(key, alg="ES256")) == "token.bad_algorithm"
    assert code(openssl_signed(key, alg="EdDSA")) == "token.bad_algorithm"
    # Signed right, but for another exchange.
    assert code(openssl_signed(key, aud="hie:elsewhere")) == "token.wrong_audience"


def test_an_ed25519_login_refuses_an_sm2_header(sm2_login: tuple[Path, str]) -> None:
    key, _ = sm2_login
    ed = Ed25519PrivateKey.generate()
    logins = parse_logins({"institutions": {"county": {"public_key": public_key_pem(ed).decode()}}})
    with pytest.raises(TokenError) as caught:
        verify_hospital_token(openssl_signed(key), logins, audience=AUDIENCE, now=NOW)
    assert caught.value.code == "token.bad_algorithm"


def test_a_malformed_sm2_key_in_the_logins_file_fails_loudly(sm2_login: tuple[Path, str]) -> None:
    _, pem = sm2_login
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))

    def as_pem(body: bytes) -> str:
        text = base64.b64encode(body).decode()
        return f"-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n"

    point = der[-65:]
    off_curve = point[:-1] + bytes([point[-1] ^ 1])  # y changed: not a point of the curve
    for broken in (
        as_pem(der[:-1]),  # cut short
        as_pem(der + b"\x00"),  # trailing byte
        as_pem(der[:-65] + off_curve),
        as_pem(b"\x30\x03\x02\x01\x00"),  # DER, but no key
        as_pem(b"not der at all"),
    ):
        with pytest.raises(ConfigurationError, match=r"logins.toml \[institutions.county\]"):
            parse_logins({"institutions": {"county": {"public_key": broken}}})
