"""C2SP tlog-checkpoint signed notes: signed, parsed, verified; tampering and strangers refused;
under each crypto profile, and never one profile's head verified as the other's."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    SM2_TYPE,
    Checkpoint,
    CheckpointError,
    hash_of,
    key_hash,
    origin_for,
    parse_note,
    sign_note,
    verify_note,
    vkey,
)
from cryptoprofile import INTL, by_name
from exchange.servers.audit_heads import HeadSigner

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


# The crypto profiles: intl heads are what they always were; gm heads are SM2 over SM3 trees,
# and each profile's verifier refuses the other's. ------------------------------------------

SEED = bytes(range(32))
SM3_ROOT = hashlib.new("sm3", b"root").digest()


def signers() -> tuple[HeadSigner, HeadSigner]:
    return HeadSigner("demo", SEED, INTL), HeadSigner("demo", SEED, by_name("gm"))


def test_intl_heads_are_byte_for_byte_as_before_the_gm_profile() -> None:
    intl, _ = signers()
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    before = sign_note(Checkpoint(NAME, 7, ROOT), NAME, raw, key.sign)
    assert intl.origin == NAME and intl.note(7, ROOT) == before
    assert intl.verify(before) == Checkpoint(NAME, 7, ROOT)


def test_gm_heads_are_sm2_signed_and_name_sm3_in_their_origin() -> None:
    _, gm = signers()
    text = gm.note(9, SM3_ROOT)
    checkpoint = gm.verify(text)
    assert checkpoint == Checkpoint("county-hie/demo/audit/sm3", 9, SM3_ROOT)
    assert checkpoint.hash_name == "sm3" and hash_of(checkpoint.origin) == "sm3"
    assert text.startswith("county-hie/demo/audit/sm3\n9\n")
    blob = base64.b64decode(text.split("\n\n")[1].rsplit(" ", 1)[1])
    point = gm.public_raw
    assert len(point) == 65 and point[0] == 4 and gm.key_type == SM2_TYPE
    # The key ID: SM3(name || "\n" || 0xff || identifier || point)[:4].
    expected_id = hashlib.new(
        "sm3", b"county-hie/demo/audit/sm3\n\xffcounty-hie/sm2-sm3/1234567812345678" + point
    ).digest()[:4]
    assert blob[:4] == expected_id == key_hash(gm.origin, point, SM2_TYPE)
    # The rest is a DER SM2 signature over the note text, with the GM/T 0009 id.
    assert blob[4] == 0x30 and by_name("gm").load_public_key(
        base64.b64encode(point).decode()
    ).verifies(blob[4:], text.split("\n\n")[0].encode() + b"\n")
    name, key_id, key = vkey(gm.origin, point, SM2_TYPE).split("+", 2)
    assert (name, key_id, base64.b64decode(key)) == (gm.origin, expected_id.hex(), SM2_TYPE + point)


def test_a_tampered_gm_head_is_refused() -> None:
    _, gm = signers()
    text = gm.note(9, SM3_ROOT)
    with pytest.raises(CheckpointError) as err:
        gm.verify(text.replace("\n9\n", "\n10\n"))
    assert err.value.code == "checkpoint.bad_signature"


def test_each_profiles_verifier_refuses_the_other_profiles_head() -> None:
    intl, gm = signers()
    with pytest.raises(CheckpointError) as err:
        intl.verify(gm.note(9, SM3_ROOT))
    assert err.value.code == "checkpoint.hash_mismatch" and "sm3" in str(err.value)
    with pytest.raises(CheckpointError) as err:
        gm.verify(intl.note(9, ROOT))
    assert err.value.code == "checkpoint.hash_mismatch" and "sha256" in str(err.value)
    # Even a note made to look like the other's (an SM3 origin on an Ed25519 signature, or the
    # reverse) verifies with neither: the origin names the hash, the key ID the signature type.
    forged = sign_note(Checkpoint(gm.origin, 9, SM3_ROOT), gm.origin, intl.public_raw, KEY.sign)
    for signer in (intl, gm):
        with pytest.raises(CheckpointError):
            signer.verify(forged)


def test_the_origin_names_the_hash() -> None:
    assert origin_for(NAME, "sha256") == NAME
    assert origin_for(NAME, "sm3") == NAME + "/sm3"
    assert hash_of(NAME) == "sha256" and hash_of(NAME + "/sm3") == "sm3"
    with pytest.raises(CheckpointError):
        origin_for(NAME, "md5")
