"""The SM4-GCM helper (cryptoprofile.sm4gcm) against RFC 8998's vector, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from cryptoprofile.sm4gcm import SM4GCM

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "gm" / "vectors.json"
RFC8998 = {k: bytes.fromhex(v) for k, v in json.loads(VECTORS.read_text())["sm4_gcm"].items()}


def test_rfc8998_vector_seals_and_opens() -> None:
    v = RFC8998
    sealed = SM4GCM(v["key"]).encrypt(v["iv"], v["plaintext"], v["aad"])
    assert sealed == v["ciphertext"] + v["tag"]
    assert SM4GCM(v["key"]).decrypt(v["iv"], sealed, v["aad"]) == v["plaintext"]


def test_round_trip_without_associated_data() -> None:
    aead, nonce = SM4GCM(bytes(range(16))), bytes(12)
    assert aead.decrypt(nonce, aead.encrypt(nonce, b"synthetic", None), None) == b"synthetic"
    assert aead.decrypt(nonce, aead.encrypt(nonce, b"", None), None) == b""


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_a_nonce_not_of_12_bytes_is_refused(size: int) -> None:
    aead = SM4GCM(RFC8998["key"])
    with pytest.raises(ValueError, match="nonce is 12 bytes"):
        aead.encrypt(bytes(size), b"x", None)
    with pytest.raises(ValueError, match="nonce is 12 bytes"):
        aead.decrypt(bytes(size), bytes(32), None)


@pytest.mark.parametrize("size", [0, 15, 24, 32])
def test_a_key_not_of_16_bytes_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SM4GCM(bytes(size))


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_a_changed_byte_is_refused(where: str) -> None:
    v = RFC8998
    sealed = bytearray(v["ciphertext"] + v["tag"])
    sealed[3 if where == "ciphertext" else -1] ^= 0x01
    with pytest.raises(InvalidTag):
        SM4GCM(v["key"]).decrypt(v["iv"], bytes(sealed), v["aad"])


def test_other_associated_data_key_or_nonce_is_refused() -> None:
    v = RFC8998
    sealed = v["ciphertext"] + v["tag"]
    with pytest.raises(InvalidTag):
        SM4GCM(v["key"]).decrypt(v["iv"], sealed, v["aad"] + b"!")
    with pytest.raises(InvalidTag):
        SM4GCM(v["key"]).decrypt(v["iv"], sealed, None)
    with pytest.raises(InvalidTag):
        SM4GCM(bytes(16)).decrypt(v["iv"], sealed, v["aad"])
    with pytest.raises(InvalidTag):
        SM4GCM(v["key"]).decrypt(bytes(12), sealed, v["aad"])


@pytest.mark.parametrize("size", [0, 1, 15])
def test_data_shorter_than_a_tag_is_refused(size: int) -> None:
    with pytest.raises(InvalidTag):
        SM4GCM(RFC8998["key"]).decrypt(RFC8998["iv"], bytes(size), None)


def test_a_bare_tag_of_empty_plaintext_opens_only_untouched() -> None:
    aead, nonce = SM4GCM(RFC8998["key"]), RFC8998["iv"]
    tag = aead.encrypt(nonce, b"", b"ctx")
    assert len(tag) == 16 and aead.decrypt(nonce, tag, b"ctx") == b""
    with pytest.raises(InvalidTag):
        aead.decrypt(nonce, tag[:-1] + bytes([tag[-1] ^ 1]), b"ctx")
