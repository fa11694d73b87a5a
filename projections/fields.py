"""Direct identifiers in the read models, at rest: encrypted per field, or kept only as keyed
hashes where finding or comparing is all that is needed.

The ledger is encrypted whole; the read models are what every read touches, so only the
fields that name a person are protected, with a key of their own
(``<data dir>/secrets/projection_key``), from which two subkeys are derived:

- ``lookup(system, value)``: HMAC-SHA256, for an identifier looked up by its value (a
  resident ID, an MRN, a health card: ``patient_identifiers.value_hash``) or compared and
  never shown (a guardian's resident ID on a consent and in the guardians table);
- ``seal(text, context)`` / ``open(token, context)``: AES-256-GCM-SIV (RFC 8452, the
  nonce-misuse-resistant AES-GCM) with the column as associated data (a value sealed for one
  column does not open as another's), for what is shown back: the identifiers' values and
  the patient's demographics (name, gender, birth date as the institutions sent them). The
  nonce is a keyed hash of the column and the text, so sealing is deterministic: a read model
  rebuilt from the ledger is the same row for row, and what that reveals — that two sealed
  values are equal — the lookup hashes reveal already.

A token is ``v1.`` and the URL-safe base64 of nonce, ciphertext and tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

_PREFIX = "v1."


class FieldCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the projection key is 32 bytes")
        self._index = hmac.new(key, b"county-hie projection lookup", hashlib.sha256).digest()
        self._nonce = hmac.new(key, b"county-hie projection nonce", hashlib.sha256).digest()
        self._aead = AESGCMSIV(
            hmac.new(key, b"county-hie projection seal", hashlib.sha256).digest()
        )

    def lookup(self, system: str, value: str) -> bytes:
        """The keyed hash an identifier is found (or compared) by."""
        return hmac.new(self._index, f"{system}\x1f{value}".encode(), hashlib.sha256).digest()

    def seal(self, text: str, context: str) -> str:
        nonce = hmac.new(self._nonce, f"{context}\x1f{text}".encode(), hashlib.sha256).digest()
        nonce = nonce[:12]
        sealed = self._aead.encrypt(nonce, text.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> str:
        if not token.startswith(_PREFIX):
            raise ValueError("not a sealed field")
        raw = base64.urlsafe_b64decode(token[len(_PREFIX) :])
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
