"""The one door to the JOSE library (PyJWT): every bearer token the exchange issues or accepts
is signed and checked here, so algorithm handling lives in one place.

Rules kept for every token (RFC 8725, JWT best current practice):
- the key decides the algorithm: ``decode`` is given the key and the one algorithm that key
  has, never the header's choice, so ``none``, ``HS256`` keyed with a public key or an ES256
  claim for an Ed25519 key are refused by the library before any claim is believed;
- keys offered in the header (``jwk``, ``jku``, ``x5c``) are never used: the caller passes the
  key;
- time claims are the caller's to check against the clock it is given (PyJWT would read the
  system clock, and the exchange's rules on lifetimes are stricter than ``exp`` alone).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = [
    "AudienceMismatch",
    "JoseError",
    "PublicKey",
    "SignatureMismatch",
    "algorithm_of",
    "decode",
    "encode",
    "is_type",
    "key_id",
    "unverified_header",
]

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey

# Raised by the library for any token it refuses; the two below are the cases callers tell
# apart (catch them before JoseError: both are one).
JoseError = jwt.InvalidTokenError
SignatureMismatch = jwt.InvalidSignatureError  # the signature does not verify with the key
AudienceMismatch = jwt.InvalidAudienceError  # verified, but not for this audience (or none)


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    """The one JWS algorithm a key is used with: EdDSA for Ed25519, ES256 for P-256."""
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("only Ed25519 and ECDSA P-256 keys are used for tokens")


def key_id(key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url): the ``kid`` of its tokens."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    )


def encode(claims: Mapping[str, Any], key: PrivateKey, *, headers: Mapping[str, Any]) -> str:
    """A signed JWT (JWS compact) with the key's own algorithm."""
    return jwt.encode(dict(claims), key, algorithm=algorithm_of(key), headers=dict(headers))


def decode(
    token: str,
    key: PublicKey,
    *,
    audience: str | None = None,
    issuer: str | None = None,
    require: Sequence[str] = (),
    token_type: str | None = None,
) -> dict[str, Any]:
    """The verified claims of ``token`` (signature, algorithm pinned to ``key``, and ``aud`` /
    ``iss`` / the header's ``typ`` when given), or ``JoseError``. A token carrying ``aud`` is
    refused when no audience is expected."""
    options: Options = {
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,  # checked against `now`
        "verify_sub": False,
        "verify_jti": False,  # their format is checked with the others
        "require": list(require),
    }
    try:
        decoded = jwt.decode_complete(
            token,
            key,
            algorithms=[algorithm_of(key)],
            audience=audience,
            issuer=issuer,
            options=options,
        )
    except jwt.MissingRequiredClaimError as exc:
        if exc.claim == "aud" and audience is not None:
            raise AudienceMismatch("the token names no audience") from None
        raise
    if token_type is not None and not is_type(decoded["header"], token_type):
        raise JoseError(f"the token's type (typ) is not {token_type}")
    claims: dict[str, Any] = decoded["payload"]
    return claims


def is_type(header: Mapping[str, Any], token_type: str) -> bool:
    """Whether the header's ``typ`` names ``token_type`` (compared as a media type is)."""
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower() == token_type.lower()


def unverified_header(token: str) -> dict[str, Any] | None:
    """The token's JOSE header, unverified (for routing only), or None if it has none."""
    try:
        return jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return None
