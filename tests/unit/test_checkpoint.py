"""C2SP tlog-checkpoint signed notes: signed, parsed, verified; tampering and strangers refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    key_hash,
    parse_note,
    sign_note,
    verify_note,
    vkey,
)

NAME = "county-hie/demo/audit"
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
ROOT = hashlib.sha256(b"root").digest()


def verify(message: bytes, signature: bytes) -> bool:
    try:
        KEY.public_key().verify(signature, message)
        return True
    except InvalidSignature:
        return False


def note() -> str:
    return sign_note(Checkpoint(NAME, 1234, ROOT), NAME, PUB, KEY.sign)


def test_the_note_has_the_checkpoint_format_and_verifies() -> None:
    text = note()
    body, signature_line = text.split("\n\n")
    assert body == f"{NAME}\n1234\n{base64.b64encode(ROOT).decode()}"
    assert signature_line.startswith(f"\u2014 {NAME} ") and text.endswith("\n")
    blob = base64.b64decode(signature_line.rsplit(" ", 1)[1])
    assert blob[:4] == key_hash(NAME, PUB) and len(blob) == 68
    assert verify_note(text, NAME, PUB, verify) == Checkpoint(NAME, 1234, ROOT)
    assert vkey(NAME, PUB).startswith(f"{NAME}+{key_hash(NAME, PUB).hex()}+")


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda t: t.replace("1234", "1235"), "checkpoint.bad_signature"),
        (lambda t: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:], "checkpoint.bad_signature"),
        (lambda t: t.replace(f"\u2014 {NAME} ", "\u2014 someone-else "), "checkpoint.unsigned"),
        (lambda t: t.split("\n\n")[0] + "\n\n", "checkpoint.unsigned"),
        (lambda t: t.replace("\n\n", "\n"), "checkpoint.malformed"),
        (lambda t: t.replace("1234", "01234"), "checkpoint.malformed"),
    ],
)
def test_tampered_or_unsigned_notes_are_refused(tamper, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError) as err:
        verify_note(tamper(note()), NAME, PUB, verify)
    assert err.value.code == code


def test_a_note_signed_by_another_key_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    text = sign_note(Checkpoint(NAME, 1, ROOT), NAME, PUB, other.sign)
    with pytest.raises(CheckpointError):
        verify_note(text, NAME, PUB, verify)
    assert parse_note(text)[0].size == 1
