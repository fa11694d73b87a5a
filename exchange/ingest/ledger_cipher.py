"""The ledger's cipher under the ``gm`` crypto profile: SM4-GCM, framed as the eventsourcing
library's own ``AESCipher`` frames AES-GCM.

A stored event is ``nonce (12 bytes) + tag (16 bytes) + ciphertext``, with a fresh random
nonce for every event, exactly the layout of ``eventsourcing.cryptography.AESCipher``; only
the block cipher differs. A wrong key, or a damaged or swapped event, is refused with the
library's own error (``ValueError``), so the recorder reports it as it would under ``intl``.

The key: the exchange's ``ledger_cipher_key`` secret is the base64 of 32 bytes (an AES-256
key under ``intl``); SM4 takes 16. Rather than cut the secret, the SM4 key is derived from it
(``ledger_sm4_key``): HMAC-SM3 keyed by the 32-byte secret over the label
``county-hie ledger SM4-GCM key``, first 16 bytes. The same secret gives the same key on
every start; the label keeps it apart from any other key that secret might ever feed.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from eventsourcing.persistence import Cipher

from cryptoprofile import by_name
from cryptoprofile.sm4gcm import KEY_SIZE, NONCE_SIZE, SM4GCM, TAG_SIZE

CIPHER_KEY = "CIPHER_KEY"
LABEL = b"county-hie ledger SM4-GCM key"
SECRET_SIZE = 32


def ledger_sm4_key(secret: bytes) -> bytes:
    """The ledger's 16-byte SM4 key from its 32-byte secret: HMAC-SM3(secret, LABEL)[:16]."""
    if len(secret) != SECRET_SIZE:
        raise ValueError(
            f"the ledger cipher key is {SECRET_SIZE} bytes (base64), not {len(secret)}"
        )
    # by_name runs the gm profile's known-answer tests first (once a process).
    return by_name("gm").hmac(secret, LABEL)[:KEY_SIZE]


class SM4Cipher(Cipher):
    """SM4-GCM for stored events (``CIPHER_TOPIC`` under the ``gm`` profile); its key is read
    from the environment's ``CIPHER_KEY``, as the library's ciphers read theirs."""

    def __init__(self, environment: Any) -> None:
        given = environment.get(CIPHER_KEY)
        if not given:
            raise OSError(f"'{CIPHER_KEY}' not in env")
        try:
            secret = base64.b64decode(given.encode("utf8"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the ledger cipher key is not base64") from None
        self._aead = SM4GCM(ledger_sm4_key(secret))

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, plaintext, None)
        return nonce + sealed[-TAG_SIZE:] + sealed[:-TAG_SIZE]

    def decrypt(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < NONCE_SIZE + TAG_SIZE:
            raise ValueError("Damaged cipher text: shorter than its nonce and tag")
        nonce = ciphertext[:NONCE_SIZE]
        tag = ciphertext[NONCE_SIZE : NONCE_SIZE + TAG_SIZE]
        try:
            return self._aead.decrypt(nonce, ciphertext[NONCE_SIZE + TAG_SIZE :] + tag, None)
        except InvalidTag as e:
            raise ValueError("Invalid cipher tag") from e
