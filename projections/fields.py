"""Direct identifiers in the read models, at rest: encrypted per field, or kept only as keyed
hashes where finding or comparing is all that is needed.

The ledger is encrypted whole; the read models are what every read touches, so only the
fields that name a person are protected, with a key of their own
(``<data dir>/secrets/projection_key``), from which subkeys are derived with the consortium's
crypto profile (cryptoprofile/):

- ``lookup(system, value)``: an HMAC (HMAC-SHA256 under ``intl``, HMAC-SM3 under ``gm``), for
  an identifier looked up by its value (a resident ID, an MRN, a health card:
  ``patient_identifiers.value_hash``) or compared and never shown (a guardian's resident ID
  on a consent and in the guardians table);
- ``seal(text, context)`` / ``open(token, context)``: an AEAD with the column as associated
  data (a value sealed for one column does not open as another's), for what is shown back:
  the identifiers' values and the patient's demographics (name, gender, birth date as the
  institutions sent them). Under ``intl`` it is AES-256-GCM-SIV (RFC 8452, the
  nonce-misuse-resistant AES-GCM); under ``gm`` SM4-GCM.

Sealing is deterministic under both: the nonce is a keyed hash (the profile's HMAC) of the
column and the text, first 12 bytes, so a read model rebuilt from the ledger is the same row
for row, and what that reveals — that two sealed values are equal — the lookup hashes reveal
already. Under ``gm`` this makes SM4-GCM a SIV-like construction: the nonce is a keyed
function of the plaintext and its context, so it repeats only for the same text in the same
column, which seals to the same token anyway.

A token is a prefix and the URL-safe base64 of nonce, ciphertext and tag: ``v1.`` under
``intl`` (as before profiles), ``g1.`` under ``gm``, so a token of one profile is refused by
the other by name and never tried as its own.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from cryptoprofile import Profile
from cryptoprofile.sm4gcm import KEY_SIZE, SM4GCM

# The token prefix of each profile (its name: cryptoprofile.NAMES).
PREFIXES = {"intl": "v1.", "gm": "g1."}
NONCE_SIZE = 12


class FieldCipher:
    """Lookup hashes and sealed fields under ``key`` (32 bytes) and the consortium's
    ``profile``, which is required: a field cipher built without it would write the other
    profile's tokens."""

    def __init__(self, key: bytes, profile: Profile) -> None:
        if len(key) != 32:
            raise ValueError("the projection key is 32 bytes")
        if profile.name not in PREFIXES:
            raise ValueError(f"no field cipher for the crypto profile {profile.name!r}")
        self.profile = profile
        self._prefix = PREFIXES[profile.name]
        self._index = profile.hmac(key, b"county-hie projection lookup")
        self._nonce = profile.hmac(key, b"county-hie projection nonce")
        seal_key = profile.hmac(key, b"county-hie projection seal")
        # The seal key: the HMAC's 32 bytes for AES-256, its first 16 for SM4.
        self._aead: AESGCMSIV | SM4GCM = (
            AESGCMSIV(seal_key) if profile.name == "intl" else SM4GCM(seal_key[:KEY_SIZE])
        )

    def lookup(self, system: str, value: str) -> bytes:
        """The keyed hash an identifier is found (or compared) by."""
        return self.profile.hmac(self._index, f"{system}\x1f{value}".encode())

    def seal(self, text: str, context: str) -> str:
        nonce = self.profile.hmac(self._nonce, f"{context}\x1f{text}".encode())[:NONCE_SIZE]
        sealed = self._aead.encrypt(nonce, text.encode(), context.encode())
        return self._prefix + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> str:
        if not token.startswith(self._prefix):
            other = [name for name, p in PREFIXES.items() if token.startswith(p)]
            if other:
                raise ValueError(
                    f"a field sealed under the {other[0]} crypto profile, and this consortium's "
                    f"is {self.profile.name}"
                )
            raise ValueError("not a sealed field")
        raw = base64.urlsafe_b64decode(token[len(self._prefix) :])
        return self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], context.encode()).decode()
