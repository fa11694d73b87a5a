"""What is wrong with a submission's signature, if anything, under the consortium's profile.

The registered key says the profile: the ledger holds keys of the consortium's profile only
(registration and rotation refuse the other's, ``key.profile``), so an institution's Ed25519
key means ``intl`` and its SM2 key means ``gm``. The signature must then be of that key's
form before it is verified at all:

- ``intl``: the base64 of a raw 64-byte Ed25519 signature;
- ``gm``: the base64 of a DER ``SEQUENCE { INTEGER r, INTEGER s }`` (strict DER, each number
  from 1 to the curve's order less one), an SM2 signature with SM3 over the signer's Z value
  with the user id ``1234567812345678`` (GM/T 0009).

So a sender that signs with the other profile's algorithm is told so (``signature.profile``),
one whose signature is not even of the form (not base64, DER cut short) is told that
(``signature.malformed``), and one whose signature has the form but does not verify (another
key, other bytes, an SM2 signature made with another user id, which cannot be told apart from
another key) gets ``signature.invalid``. Nothing here raises for what a sender sends.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from adapters.envelope import canonical_bytes
from cryptoprofile import ED25519, SM2, PublicKey, key_algorithm
from cryptoprofile import verify as verifies
from domain.problems import Problem

# The order of the SM2 curve sm2p256v1: r and s are each from 1 to ORDER - 1.
SM2_ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
ED25519_SIGNATURE_BYTES = 64
USER_ID = "1234567812345678"
_FIELD = "signature"
_PROFILE_OF = {ED25519: "intl", SM2: "gm"}

BAD_SIGNATURE = Problem(
    "signature.invalid",
    "the signature does not verify with the institution's registered key over the RFC 8785 "
    "bytes of the envelope",
    _FIELD,
)
BAD_SM2_SIGNATURE = Problem(
    "signature.invalid",
    "the SM2 signature does not verify with the institution's registered key over the RFC "
    f"8785 bytes of the envelope, with SM3 and the user id {USER_ID} (GM/T 0009; a signature "
    "made with another id, such as OpenSSL's default empty one, does not verify)",
    _FIELD,
)
NOT_BASE64 = Problem(
    "signature.malformed", "the envelope's signature is missing or is not base64", _FIELD
)
SM2_NOT_DER = Problem(
    "signature.malformed",
    "the signature is not an SM2 signature in DER (SEQUENCE of two INTEGERs r and s, each "
    "from 1 to the curve's order less one), as this consortium's gm profile requires",
    _FIELD,
)
ED25519_NOT_64 = Problem(
    "signature.malformed",
    "the signature is not a raw 64-byte Ed25519 signature, as this consortium's intl profile "
    "requires",
    _FIELD,
)
ED25519_TO_GM = Problem(
    "signature.profile",
    "the signature is a raw 64-byte signature, as Ed25519 makes; this consortium's gm profile "
    f"signs with SM2 (SM3, user id {USER_ID}), DER-encoded, with the institution's registered "
    "SM2 key",
    _FIELD,
)
SM2_TO_INTL = Problem(
    "signature.profile",
    "the signature is DER (r, s), as SM2 and ECDSA make; this consortium's intl profile signs "
    "with Ed25519 (a raw 64-byte signature) with the institution's registered Ed25519 key",
    _FIELD,
)
CODES = ("signature.invalid", "signature.malformed", "signature.profile")


def profile_of(public: PublicKey) -> str:
    """``intl`` or ``gm``: the profile whose algorithm ``public`` is."""
    return _PROFILE_OF[key_algorithm(public)]


def der_pair(signature: bytes) -> tuple[int, int] | None:
    """(r, s) of a strict DER ``SEQUENCE { INTEGER r, INTEGER s }`` of two SM2 numbers, else
    None: short lengths only (the whole is at most 72 bytes), no padding byte that is not
    needed, nothing negative, zero or from the curve's order up, nothing after the end."""
    if len(signature) < 8 or len(signature) > 72 or signature[0] != 0x30:
        return None
    if signature[1] != len(signature) - 2:
        return None
    numbers: list[int] = []
    at = 2
    for _ in range(2):
        if at + 2 > len(signature) or signature[at] != 0x02:
            return None
        size = signature[at + 1]
        body = signature[at + 2 : at + 2 + size]
        if not 1 <= size <= 33 or len(body) != size or body[0] & 0x80:
            return None
        if size > 1 and body[0] == 0 and not body[1] & 0x80:
            return None  # a leading zero byte DER does not allow
        number = int.from_bytes(body, "big")
        if not 0 < number < SM2_ORDER:
            return None
        numbers.append(number)
        at += 2 + size
    if at != len(signature):
        return None
    return numbers[0], numbers[1]


def signature_problem(doc: dict[str, Any], public: PublicKey) -> Problem | None:
    """None if ``doc``'s signature is ``public``'s over its canonical bytes; else what is
    wrong with it, by the form ``public``'s profile requires (see the module's note)."""
    raw = doc.get("signature")
    if not isinstance(raw, str):
        return NOT_BASE64
    try:
        signature = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return NOT_BASE64
    if key_algorithm(public) == SM2:
        if der_pair(signature) is None:
            return ED25519_TO_GM if len(signature) == ED25519_SIGNATURE_BYTES else SM2_NOT_DER
        invalid = BAD_SM2_SIGNATURE
    else:
        if len(signature) != ED25519_SIGNATURE_BYTES:
            return SM2_TO_INTL if der_pair(signature) is not None else ED25519_NOT_64
        invalid = BAD_SIGNATURE
    try:
        message = canonical_bytes(doc)
    except (ValueError, TypeError, RecursionError):
        return invalid
    return None if verifies(public, signature, message) else invalid
