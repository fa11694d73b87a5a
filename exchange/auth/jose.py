"""The one door to the JOSE library (PyJWT): every bearer token the exchange issues or accepts
is signed and checked here, so algorithm handling lives in one place.

Rules kept for every token (RFC 8725, JWT best current practice):
- the key decides the algorithm: ``decode`` is given the key and the one algorithm that key
  has, never the header's choice, so ``none``, ``HS256`` keyed with a public key, an ES256
  claim for an Ed25519 key or an EdDSA claim for an SM2 key are refused by the library before
  any claim is believed;
- keys offered in the header (``jwk``, ``jku``, ``x5c``) are never used: the caller passes the
  key;
- time claims are the caller's to check against the clock it is given (PyJWT would read the
  system clock, and the exchange's rules on lifetimes are stricter than ``exp`` alone).

SM2 (the ``gm`` crypto profile, ``cryptoprofile.sm2``) has no IANA-registered JWS algorithm.
Tokens signed with it say ``"alg": "SM2"``, the name Chinese JWT implementations write in
their headers: SM2 with SM3 and the user id ``1234567812345678`` (GM/T 0009's default) over
the JWS signing input. The signature is the raw ``r || s``, 32 bytes each, as ES256 carries
ECDSA (RFC 7518 §3.4), not the DER that OpenSSL and ``cryptoprofile.sm2`` write: a fixed
length is checked before anything is parsed, and one signature has one encoding. ``SM2`` is
registered with PyJWT as an algorithm of its own (``_SM2``), so it is checked under the same
rules as the others: only ever when the caller's key is an SM2 key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from jwt.algorithms import Algorithm

import cryptoprofile

if TYPE_CHECKING:
    from jwt.types import JWKDict, Options

    from cryptoprofile.sm2 import SM2PrivateKey, SM2PublicKey

    PublicKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | SM2PublicKey
    PrivateKey: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | SM2PrivateKey
else:
    PublicKey = PrivateKey = Any

__all__ = [
    "SM2",
    "AudienceMismatch",
    "JoseError",
    "PublicKey",
    "SignatureMismatch",
    "algorithm_of",
    "decode",
    "encode",
    "is_type",
    "key_id",
    "sm2_jws_signature",
    "unverified_header",
]

SM2 = "SM2"  # the JWS "alg" of SM2 with SM3 (no IANA name exists; see the module's docstring)

# Raised by the library for any token it refuses; the two below are the cases callers tell
# apart (catch them before JoseError: both are one).
JoseError = jwt.InvalidTokenError
SignatureMismatch = jwt.InvalidSignatureError  # the signature does not verify with the key
AudienceMismatch = jwt.InvalidAudienceError  # verified, but not for this audience (or none)


def _is_sm2(key: object) -> bool:
    try:
        return cryptoprofile.key_algorithm(key) == cryptoprofile.SM2
    except cryptoprofile.KeyProfileError:
        return False


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    """The one JWS algorithm a key is used with: EdDSA for Ed25519, ES256 for P-256, SM2 for
    SM2."""
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return "EdDSA"
    if _is_sm2(key):
        return SM2
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ES256"
    raise ValueError("only Ed25519, ECDSA P-256 and SM2 keys are used for tokens")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_id(key: PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (base64url): the ``kid`` of its tokens.

    Ed25519: the OKP JWK (RFC 8037) hashed with SHA-256. SM2: the EC JWK with ``"crv":
    "SM2"`` and the point's ``x`` and ``y`` (32 bytes each), hashed with SM3, the ``gm``
    profile's hash, so nothing of that profile's tokens rests on SHA-256."""
    if isinstance(key, Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        hash_name = "sha256"
    elif _is_sm2(key):
        members = _sm2_jwk(key)
        hash_name = "sm3"
    else:
        raise ValueError("the exchange's own tokens are signed with Ed25519 or SM2")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.new(hash_name, canonical.encode()).digest())


def _sm2_jwk(key: Any) -> dict[str, str]:
    """The members RFC 7638 requires of an EC JWK, for an SM2 public key."""
    point = key.point()
    return {"crv": "SM2", "kty": "EC", "x": _b64url(point[1:33]), "y": _b64url(point[33:])}


def sm2_jws_signature(der: bytes) -> bytes:
    """A DER SM2 signature (``SEQUENCE { r, s }``, as OpenSSL writes it) as a JWS carries it:
    ``r || s``, 32 bytes each. ``ValueError`` if it is not such DER."""
    r, s = decode_dss_signature(der)
    if not (0 < r < 2**256 and 0 < s < 2**256):
        raise ValueError("an SM2 signature's r and s are 256-bit numbers")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class _SM2(Algorithm):
    """PyJWT's algorithm ``SM2``: SM2 with SM3 and the default user id, ``r || s``."""

    def prepare_key(self, key: Any) -> Any:
        if not _is_sm2(key):
            raise jwt.InvalidKeyError("the SM2 algorithm takes an SM2 key (cryptoprofile.sm2)")
        return key

    def sign(self, msg: bytes, key: Any) -> bytes:
        return sm2_jws_signature(key.sign(msg))

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if len(sig) != 64:  # a DER signature, or anything else, is refused unparsed
            return False
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        public = key.public_key() if hasattr(key, "public_key") else key
        return bool(public.verifies(der, msg))

    @overload
    @staticmethod
    def to_jwk(key_obj: Any, as_dict: Literal[True]) -> JWKDict: ...

    @overload
    @staticmethod
    def to_jwk(key_obj: Any, as_dict: Literal[False] = False) -> str: ...

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> JWKDict | str:
        public = key_obj.public_key() if hasattr(key_obj, "public_key") else key_obj
        jwk: dict[str, Any] = _sm2_jwk(public)
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk: str | JWKDict) -> Any:
        raise jwt.InvalidKeyError("the exchange never takes an SM2 key from a JWK")


def _register_sm2() -> None:
    try:
        registered = jwt.get_algorithm_by_name(SM2)
    except NotImplementedError:
        jwt.register_algorithm(SM2, _SM2())
        return
    if not isinstance(registered, _SM2):
        raise RuntimeError("another JWS algorithm is registered with PyJWT under the name SM2")


_register_sm2()


def encode(claims: Mapping[str, Any], key: PrivateKey, *, headers: Mapping[str, Any]) -> str:
    """A signed JWT (JWS compact) with the key's own algorithm."""
    signing_key: Any = key
    return jwt.encode(dict(claims), signing_key, algorithm=algorithm_of(key), headers=dict(headers))


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
    verifying_key: Any = key
    try:
        decoded = jwt.decode_complete(
            token,
            verifying_key,
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
