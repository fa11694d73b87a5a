"""The ledger's events at rest under each crypto profile, read back from PostgreSQL as stored:
AES-256-GCM under ``intl``, SM4-GCM under ``gm``, neither opening the other's."""

from __future__ import annotations

import base64
import json
import secrets
import zlib

import psycopg
import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

from cryptoprofile import by_name, public_key_b64
from exchange.ingest.ledger import Ledger
from exchange.ingest.ledger_cipher import SM4Cipher
from tests.integration.conftest import PROFILES

pytestmark = pytest.mark.integration

OTHER = {"intl": "gm", "gm": "intl"}
CODE = "thc-cipher"


@pytest.mark.parametrize("crypto_profile", PROFILES)
def test_stored_events_are_encrypted_with_the_profiles_cipher(
    database_url: str, crypto_profile: str
) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    pseudonym = secrets.token_bytes(32)
    public = public_key_b64(by_name(crypto_profile).new_private_key())
    ledger = Ledger(database_url, key, pseudonym, crypto_profile=crypto_profile)
    try:
        assert ledger.register_institution(CODE, "测试卫生院", "township_health_centre", public)
        table = ledger.tables[0]
    finally:
        ledger.close()

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f'SELECT state FROM "{table}" ORDER BY notification_id').fetchall()
    assert rows, "the registration stored no event"
    stored = bytes(rows[0][0])
    assert public.encode() not in stored and CODE.encode() not in stored

    env = Environment(env={"CIPHER_KEY": key})
    sm4, aes = SM4Cipher(env), AESCipher(env)
    own, other = (sm4, aes) if crypto_profile == "gm" else (aes, sm4)
    state = json.loads(zlib.decompress(own.decrypt(stored)))
    assert state["public_key"] == public and state["name"] == "测试卫生院"
    with pytest.raises(ValueError, match="Invalid cipher tag"):
        other.decrypt(stored)

    # Opened again under its profile it reads the institution; under the other it cannot.
    again = Ledger(database_url, key, pseudonym, crypto_profile=crypto_profile)
    try:
        found = again.institution(CODE)
        assert found is not None and found.public_key == public
    finally:
        again.close()
    wrong = Ledger(database_url, key, pseudonym, crypto_profile=OTHER[crypto_profile])
    try:
        with pytest.raises(ValueError, match="Invalid cipher tag"):
            wrong.institution(CODE)
    finally:
        wrong.close()
