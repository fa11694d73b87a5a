"""Submission envelopes: canonical bytes, signatures of the consortium's crypto profile,
content-derived ids.

The signature covers the RFC 8785 (JSON Canonicalization Scheme) bytes of the envelope without
its ``signature`` member, so any sending system that implements JCS can sign the same bytes.
Its form is the crypto profile's (cryptoprofile/): under ``intl`` the base64 of a raw 64-byte
Ed25519 signature, under ``gm`` the base64 of a DER SM2 signature (SM3, with the signer's Z
value over the user id ``1234567812345678``, GM/T 0009). The key says which: an envelope is
signed with whatever private key it is given, and verified with whatever public key. ``build_envelope`` writes the schema version of each item kind (and of the
envelope) that is not 1 (domain/upcasting.py): what the adapters produce is today's shape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature

import cryptoprofile
from cryptoprofile import INTL, PrivateKey, Profile, PublicKey
from domain.upcasting import ENVELOPE_VERSION, ITEM_VERSIONS, VERSION_FIELD

# Integers of up to 15 digits print the same in JavaScript as in Python; longer ones, and
# every float, take the reference implementation.
_SAFE_INT = 10**15


def _plain(value: Any) -> bool:
    """Whether orjson's compact, key-sorted JSON of ``value`` is its RFC 8785
    form: no float, no long integer, and no key with a character at or above U+D800 (where
    sorting by UTF-16 code units differs from Python's sort)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
                return False
            if type(item) is not str and not _plain(item):
                return False
        return True
    if kind is list:
        return all(type(item) is str or _plain(item) for item in value)
    if kind is int:
        return bool(-_SAFE_INT < value < _SAFE_INT)
    return False


# A run this long may be an integer past 64 bits, which orjson reads as a float.
_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str) -> Any:
    """JSON text as ``json.loads`` reads it (the value every check and signature sees), by
    orjson in about a third of the time where it is certain to read it the same: not where a
    run of 19 digits may be an integer past 64 bits, nor what orjson refuses (NaN, a lone
    surrogate, nesting past its limit), which ``json.loads`` reads or refuses as always. A
    property test holds the two to the same values."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def jcs(value: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of a JSON value.

    orjson's compact, key-sorted output is exactly them for the documents exchanges actually
    send (``_plain``), ten times faster than the standard library's encoder and far faster
    than the pure-Python reference, which signing and checking every envelope would otherwise
    spend most of its time in; the reference serialises the rest. A property test holds the
    two to the same bytes.
    """
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a lone surrogate: the reference says what to do
            pass
    return rfc8785.dumps(value)


def canonical_bytes(doc: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of everything in the envelope but its signature."""
    return jcs({k: v for k, v in doc.items() if k != "signature"})


def content_submission_id(institution: str, items: Sequence[dict[str, Any]]) -> str:
    """A submission id derived from content, so sending the same records again is a repeat."""
    digest = hashlib.sha256(jcs({"institution": institution, "events": list(items)}))
    return "sha256-" + digest.hexdigest()[:40]


def build_envelope(
    *,
    institution: str,
    items: Sequence[dict[str, Any]],
    key: PrivateKey,
    sent_at: datetime,
    submission_id: str | None = None,
    versions: Mapping[str, int] = ITEM_VERSIONS,
    envelope_version: int = ENVELOPE_VERSION,
) -> dict[str, Any]:
    """A signed envelope of ``items``. An item that states no schema version is given its
    kind's current one in ``versions`` (version 1 is never written: absent means 1, so
    today's envelopes are the bytes they always were). ``key`` is an Ed25519 or SM2 private
    key: the signature is of its kind (raw 64 bytes, or DER)."""
    items = [_versioned(item, versions) for item in items]
    doc: dict[str, Any] = {
        "submission_id": submission_id or content_submission_id(institution, items),
        "institution": institution,
        "sent_at": sent_at.isoformat(),
        "events": items,
    }
    if envelope_version != 1:
        doc[VERSION_FIELD] = envelope_version
    doc["signature"] = base64.b64encode(key.sign(canonical_bytes(doc))).decode()
    return doc


def _versioned(item: Any, versions: Mapping[str, int]) -> Any:
    kind = item.get("kind") if isinstance(item, dict) else None
    version = versions.get(kind, 1) if isinstance(kind, str) else 1
    if version == 1 or VERSION_FIELD in item:
        return item
    return {**item, VERSION_FIELD: version}


def verify_signature(doc: dict[str, Any], public_key: PublicKey) -> bool:
    """Whether ``doc``'s signature is ``public_key``'s (Ed25519 or SM2) over its canonical
    bytes; anything else (no signature, not base64, a signature of the other kind, malformed
    DER) is False, never an exception. ``exchange.ingest.signatures`` says which it was."""
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
        public_key.verify(signature, canonical_bytes(doc))
    except (InvalidSignature, ValueError, KeyError, TypeError, RecursionError):
        return False
    return True


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# Keys (cryptoprofile's, which say what they are): raw 32-byte Ed25519 or 65-byte SM2 point
# public keys, base64 for registration; private keys PKCS#8 PEM on disk.


def new_private_key(profile: Profile = INTL) -> PrivateKey:
    """A new private key of ``profile`` (Ed25519 under ``intl``, SM2 under ``gm``)."""
    key: PrivateKey = profile.new_private_key()
    return key


def public_key_b64(key: PrivateKey | PublicKey) -> str:
    """The base64 a key is registered by (of a private key, its public key's)."""
    return cryptoprofile.public_key_b64(key)


def load_public_key(b64: str) -> PublicKey:
    """A registered key from its base64, Ed25519 or SM2 by its size; a key that is neither
    raises ``cryptoprofile.KeyProfileError`` (a ValueError, code ``key.malformed``)."""
    key: PublicKey = cryptoprofile.load_public_key(b64)
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM of an Ed25519 or SM2 private key (as ``openssl genpkey`` writes them)."""
    return cryptoprofile.private_key_pem(key)


def load_private_key_pem(data: bytes, profile: Profile | None = None) -> PrivateKey:
    """An Ed25519 or SM2 private key from PEM; with ``profile``, only that profile's (else
    ``KeyProfileError``, code ``key.profile``). Not a key: ``KeyProfileError``, code
    ``key.malformed``; both are ValueErrors."""
    key: PrivateKey = (
        cryptoprofile.load_private_key_pem(data)
        if profile is None
        else profile.load_private_key_pem(data)
    )
    return key
