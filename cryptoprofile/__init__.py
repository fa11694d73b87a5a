"""The consortium's cryptographic profile: the signatures, hashes and ciphers that protect the
exchange's data, chosen behind one small interface.

Two profiles, one fixed for a consortium's lifetime when its exchange is first set up:

========  ==========================  ===========  =====================================
profile   signatures (submissions,    hash (audit  encryption at rest (ledger, read-model
          tokens, audit tree heads)   log, HMACs)  fields)
========  ==========================  ===========  =====================================
``intl``  Ed25519                     SHA-256      AES-256-GCM (ledger), AES-GCM-SIV
``gm``    SM2 with SM3, id            SM3          SM4-GCM
          ``1234567812345678``, DER
========  ==========================  ===========  =====================================

Keys say what they are (a 32-byte Ed25519 key, a 65-byte SM2 point), so a key of the other
profile is refused by name (``key.profile``) wherever one is loaded, never silently used.

The ledger's cipher (``exchange/ingest/ledger_cipher.py``) and the read models' field cipher
(``projections/fields.py``) choose theirs by the profile's name; ``docs/crypto-profile.md`` says
what stays SHA-256 under both profiles (names, not protection) and why.

This package imports nothing of the exchange's own; the SM2 module (libcrypto through ctypes)
is loaded only when the ``gm`` profile is used, and runs its known-answer test as it loads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as _hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from cryptoprofile.sm2 import SM2PrivateKey, SM2PublicKey

    PrivateKey: TypeAlias = Ed25519PrivateKey | SM2PrivateKey
    PublicKey: TypeAlias = Ed25519PublicKey | SM2PublicKey
else:
    PrivateKey = PublicKey = Any

__all__ = [
    "GM",
    "INTL",
    "NAMES",
    "KeyProfileError",
    "PrivateKey",
    "Profile",
    "PublicKey",
    "by_name",
    "key_algorithm",
    "load_private_key_pem",
    "load_public_key",
]

NAMES = ("intl", "gm")
ED25519 = "Ed25519"
SM2 = "SM2"


class KeyProfileError(ValueError):
    """A key that is not the profile's, or not a key at all; ``code`` is stable."""

    def __init__(self, message: str, code: str = "key.profile") -> None:
        super().__init__(message)
        self.code = code


def _sm2() -> Any:
    from cryptoprofile import sm2

    return sm2


def key_algorithm(key: object) -> str:
    """``Ed25519`` or ``SM2``: the algorithm of a private or public key of either profile."""
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return ED25519
    name = type(key).__name__
    if name in ("SM2PrivateKey", "SM2PublicKey"):
        return SM2
    raise KeyProfileError("not an Ed25519 or SM2 key", "key.unsupported")


def load_public_key(b64: str) -> Any:
    """A registered public key from its base64: 32 bytes are Ed25519, a 65-byte point from
    04 is SM2."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise KeyProfileError("the public key is not base64", "key.malformed") from None
    try:
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
        if len(raw) == 65 and raw[0] == 4:
            return _sm2().SM2PublicKey(raw)
    except ValueError:
        raise KeyProfileError(
            "the public key is not a point of its curve", "key.malformed"
        ) from None
    raise KeyProfileError(
        "a public key is 32 bytes (Ed25519) or a 65-byte point from 04 (SM2)", "key.malformed"
    )


def public_key_b64(key: Any) -> str:
    """The base64 a key is registered by (of a private key: its public key's)."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.point()
    return base64.b64encode(raw).decode()


def _pem_body(data: bytes, label: str) -> bytes | None:
    text = data.decode("ascii", "replace")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        return None
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _load_pem(
    data: bytes,
    load_ed25519: Callable[[bytes], object],
    ed25519_type: type,
    labels: tuple[str, ...],
    sm2_from_der: Callable[[bytes], Any],
    refusal: str,
) -> Any:
    """An Ed25519 key as ``cryptography`` reads it, else an SM2 key from the DER under one of
    ``labels``, else ``KeyProfileError`` (``key.malformed``) saying ``refusal``."""
    try:
        key = load_ed25519(data)
    except Exception:  # ValueError, TypeError, or UnsupportedAlgorithm (an SM2 key, perhaps)
        key = None
    if isinstance(key, ed25519_type):
        return key
    for label in labels:
        der = _pem_body(data, label)
        if der is not None:
            try:
                return sm2_from_der(der)
            except ValueError:
                break
    raise KeyProfileError(refusal, "key.malformed")


def load_private_key_pem(data: bytes) -> Any:
    """An Ed25519 or SM2 private key from PEM (PKCS#8, as ``openssl genpkey`` writes it)."""
    return _load_pem(
        data,
        lambda pem: serialization.load_pem_private_key(pem, password=None),
        Ed25519PrivateKey,
        ("PRIVATE KEY", "EC PRIVATE KEY"),
        lambda der: _sm2().SM2PrivateKey.from_der(der),
        "the key file does not hold an Ed25519 or SM2 private key (PEM)",
    )


def load_public_key_pem(data: bytes) -> Any:
    """An Ed25519 or SM2 public key from PEM (SubjectPublicKeyInfo)."""
    return _load_pem(
        data,
        serialization.load_pem_public_key,
        Ed25519PublicKey,
        ("PUBLIC KEY",),
        lambda der: _sm2().SM2PublicKey.from_der(der),
        "the PEM file does not hold an Ed25519 or SM2 public key",
    )


def private_key_pem(key: Any) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return key.pem()  # type: ignore[no-any-return]


def public_key_pem(key: Any) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, Ed25519PublicKey):
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return public.pem()  # type: ignore[no-any-return]


def verify(public_key: Any, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s over ``data`` (never raises for bad input)."""
    try:
        public_key.verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Profile:
    """One profile's algorithms. ``hash_name`` is hashlib's name of its hash."""

    name: str
    signature: str  # ED25519 or SM2
    hash_name: str  # "sha256" or "sm3"
    digest: Callable[[bytes], bytes]

    def new_private_key(self) -> Any:
        if self.signature == ED25519:
            return Ed25519PrivateKey.generate()
        return _sm2().SM2PrivateKey.generate()

    def key_from_seed(self, seed: bytes) -> Any:
        """The private key a 32-byte secret of the exchange's own stands for."""
        if self.signature == ED25519:
            return Ed25519PrivateKey.from_private_bytes(seed)
        return _sm2().SM2PrivateKey.from_seed(seed)

    def check_key(self, key: Any, what: str = "the key") -> Any:
        """``key``, if it is this profile's; else ``KeyProfileError`` (``key.profile``)."""
        algorithm = key_algorithm(key)
        if algorithm != self.signature:
            raise KeyProfileError(
                f"{what} is an {algorithm} key, and this consortium's {self.name} profile "
                f"signs with {self.signature}"
            )
        return key

    def load_public_key(self, b64: str, what: str = "the public key") -> Any:
        return self.check_key(load_public_key(b64), what)

    def load_private_key_pem(self, data: bytes, what: str = "the key file") -> Any:
        return self.check_key(load_private_key_pem(data), what)

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return _hmac.new(key, data, self.hash_name).digest()


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


INTL = Profile("intl", ED25519, "sha256", lambda data: hashlib.sha256(data).digest())
GM = Profile("gm", SM2, "sm3", _sm3)


def by_name(name: str) -> Profile:
    """The profile called ``name``; the ``gm`` profile's known-answer tests run first."""
    if name == "intl":
        return INTL
    if name == "gm":
        from cryptoprofile import selftest

        selftest.run()
        return GM
    raise ValueError(f"the crypto profile must be one of {', '.join(NAMES)}")
