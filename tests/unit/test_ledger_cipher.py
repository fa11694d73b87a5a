"""The ledger's SM4-GCM cipher (gm profile): the library's framing, its key derivation, and
the profile's choice of cipher in the ledger's environment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

from cryptoprofile.sm4gcm import SM4GCM
from exchange.errors import ConfigurationError
from exchange.ingest.ledger_cipher import LABEL, SM4Cipher, ledger_sm4_key
from exchange.ingest.recorder import ledger_env

URL = "postgresql://u@db.example/hie"


def env_of(key: bytes) -> Environment:
    return Environment(env={"CIPHER_KEY": base64.b64encode(key).decode()})


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    cipher = SM4Cipher(env_of(secrets.token_bytes(32)))
    data = b'{"synthetic": "event state"}' * 20
    first, second = cipher.encrypt(data), cipher.encrypt(data)
    assert first != second and first[:12] != second[:12]
    assert len(first) == 12 + 16 + len(data)
    assert cipher.decrypt(first) == data and cipher.decrypt(second) == data
    assert cipher.decrypt(cipher.encrypt(b"")) == b""


def test_framed_as_the_library_frames_aes_gcm_nonce_tag_ciphertext() -> None:
    secret = secrets.token_bytes(32)
    stored = SM4Cipher(env_of(secret)).encrypt(b"framing")
    nonce, tag, body = stored[:12], stored[12:28], stored[28:]
    assert SM4GCM(ledger_sm4_key(secret)).decrypt(nonce, body + tag, None) == b"framing"


def test_the_sm4_key_is_hmac_sm3_of_the_secret_over_the_label() -> None:
    secret = bytes(range(32))
    expected = hmac.new(secret, LABEL, "sm3").digest()[:16]
    assert ledger_sm4_key(secret) == expected
    assert expected not in (secret[:16], secret[16:])
    assert hashlib.new("sm3", LABEL).digest()[:16] != expected  # keyed, not a plain hash
    with pytest.raises(ValueError, match="32 bytes"):
        ledger_sm4_key(bytes(16))


def test_a_wrong_key_is_refused_with_the_librarys_error() -> None:
    stored = SM4Cipher(env_of(secrets.token_bytes(32))).encrypt(b"synthetic")
    with pytest.raises(ValueError, match="Invalid cipher tag"):
        SM4Cipher(env_of(secrets.token_bytes(32))).decrypt(stored)


def test_a_changed_or_short_event_is_refused() -> None:
    cipher = SM4Cipher(env_of(secrets.token_bytes(32)))
    stored = bytearray(cipher.encrypt(b"synthetic"))
    for at in (0, 12, 30):  # nonce, tag, ciphertext
        changed = bytearray(stored)
        changed[at] ^= 1
        with pytest.raises(ValueError, match="Invalid cipher tag"):
            cipher.decrypt(bytes(changed))
    with pytest.raises(ValueError, match="Damaged cipher text"):
        cipher.decrypt(bytes(stored[:27]))


def test_aes_and_sm4_do_not_open_each_others_events() -> None:
    env = env_of(secrets.token_bytes(32))
    sm4, aes = SM4Cipher(env), AESCipher(env)
    with pytest.raises(ValueError, match="Invalid cipher tag"):
        aes.decrypt(sm4.encrypt(b"synthetic"))
    with pytest.raises(ValueError, match="Invalid cipher tag"):
        sm4.decrypt(aes.encrypt(b"synthetic"))


def test_a_missing_or_malformed_key_is_said() -> None:
    with pytest.raises(OSError, match="CIPHER_KEY"):
        SM4Cipher(Environment(env={}))
    with pytest.raises(ValueError, match="not base64"):
        SM4Cipher(Environment(env={"CIPHER_KEY": "not base64!"}))
    with pytest.raises(ValueError, match="32 bytes"):
        SM4Cipher(env_of(bytes(16)))


def test_the_profile_chooses_the_ledgers_cipher() -> None:
    assert ledger_env(URL, "k")["CIPHER_TOPIC"] == "eventsourcing.cryptography:AESCipher"
    assert ledger_env(URL, "k", crypto_profile="intl")["CIPHER_TOPIC"].endswith(":AESCipher")
    gm = ledger_env(URL, "k", crypto_profile="gm")
    assert gm["CIPHER_TOPIC"] == "exchange.ingest.ledger_cipher:SM4Cipher"
    assert gm["CIPHER_KEY"] == "k"
    with pytest.raises(ConfigurationError, match="intl, gm"):
        ledger_env(URL, "k", crypto_profile="aes")
