"""SM4-GCM (GB/T 32907 block cipher in GCM mode, RFC 8998): an AEAD with the interface of
``cryptography``'s ``AESGCM``.

``cryptography`` has SM4 and GCM mode but no AEAD class for the pair, so this is that class:
a 16-byte key, a 12-byte nonce, a 16-byte tag appended to the ciphertext, and associated data
authenticated but not encrypted. A wrong key, nonce, tag or associated data raises
``cryptography.exceptions.InvalidTag``, as ``AESGCM.decrypt`` does.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_SIZE = 16
NONCE_SIZE = 12
TAG_SIZE = 16


class SM4GCM:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("an SM4 key is 16 bytes")
        self._key = algorithms.SM4(bytes(key))

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        _check_nonce(nonce)
        encryptor = Cipher(self._key, modes.GCM(nonce)).encryptor()
        if associated_data:
            encryptor.authenticate_additional_data(associated_data)
        ciphertext = encryptor.update(data) + encryptor.finalize()
        return ciphertext + encryptor.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        _check_nonce(nonce)
        if len(data) < TAG_SIZE:
            raise InvalidTag
        decryptor = Cipher(self._key, modes.GCM(nonce, data[-TAG_SIZE:])).decryptor()
        if associated_data:
            decryptor.authenticate_additional_data(associated_data)
        return decryptor.update(data[:-TAG_SIZE]) + decryptor.finalize()


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_SIZE:
        raise ValueError("an SM4-GCM nonce is 12 bytes")
