"""Envelopes signed and verified under each crypto profile, and checked against another
implementation: the ``openssl`` command line (OpenSSL 3) verifies the SM2 signatures made here,
and its own verify here, with the user id 1234567812345678 given explicitly on both sides.

Under ``intl`` the signature is what it always was, the base64 of the raw Ed25519 signature;
under ``gm`` it is the base64 of the DER SM2 signature. What is wrong with a signature is named
by the gateway's checks (``exchange.ingest.signatures``): the other profile's algorithm
(``signature.profile``), a malformed one (``signature.malformed``), one that does not verify,
such as an SM2 signature made with another user id (``signature.invalid``).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.envelope import (
    build_envelope,
    canonical_bytes,
    load_private_key_pem,
    load_public_key,
    new_private_key,
    public_key_b64,
    verify_signature,
)
from cryptoprofile import GM, INTL, KeyProfileError, by_name, public_key_pem
from exchange.ingest.signatures import SM2_ORDER, der_pair, signature_problem
from tests.factories import observation_item, record_items, resident

by_name("gm")  # the gm profile's known-answer tests, as the exchange runs them
PROFILES = {"intl": INTL, "gm": GM}
KEYS = {name: new_private_key(profile) for name, profile in PROFILES.items()}
PUBLIC = {name: load_public_key(public_key_b64(key)) for name, key in KEYS.items()}
USER_ID = "1234567812345678"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def sign(profile: str, items: list[Any] | None = None, key: Any = None) -> dict[str, Any]:
    return build_envelope(
        institution="thc-1",
        items=items if items is not None else [observation_item(resident(1), "o-1")],
        key=key if key is not None else KEYS[profile],
        sent_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def codes(doc: dict[str, Any], profile: str) -> str | None:
    problem = signature_problem(doc, PUBLIC[profile])
    return None if problem is None else problem.code


def resigned(doc: dict[str, Any], signature: bytes) -> dict[str, Any]:
    return {**doc, "signature": base64.b64encode(signature).decode()}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_signs_and_verifies(profile: str) -> None:
    doc = sign(profile, record_items(resident(2), "a", consent=True))
    assert verify_signature(doc, PUBLIC[profile])
    assert codes(doc, profile) is None
    doc["events"][0]["source_id"] = "changed"
    assert not verify_signature(doc, PUBLIC[profile])
    assert codes(doc, profile) == "signature.invalid"


def test_intl_signatures_are_the_bytes_they_always_were() -> None:
    doc = sign("intl")
    raw = base64.b64decode(doc["signature"])
    # Ed25519 is deterministic: the signature is exactly the key's over the canonical bytes.
    assert raw == KEYS["intl"].sign(canonical_bytes(doc)) and len(raw) == 64


def test_gm_signatures_are_der_and_differ_each_time() -> None:
    doc, again = sign("gm"), sign("gm")
    raw = base64.b64decode(doc["signature"])
    pair = der_pair(raw)
    assert pair is not None and all(0 < x < SM2_ORDER for x in pair)
    assert doc["submission_id"] == again["submission_id"]  # ids come from content alone
    assert doc["signature"] != again["signature"]  # SM2 draws a new k for each signature
    assert verify_signature(again, PUBLIC["gm"])


@pytest.mark.parametrize(("signer", "checker"), [("intl", "gm"), ("gm", "intl")])
def test_the_other_profiles_signature_is_named_not_just_invalid(signer: str, checker: str) -> None:
    doc = sign(signer)
    assert not verify_signature(doc, PUBLIC[checker])
    problem = signature_problem(doc, PUBLIC[checker])
    assert problem is not None and problem.code == "signature.profile"
    assert checker in problem.message and problem.field == "signature"


def _der_variants(raw: bytes) -> dict[str, bytes]:
    r, s = der_pair(raw) or (0, 0)
    body = raw[2:]
    return {
        "cut_short": raw[:-1],
        "trailing_byte": raw[:1] + bytes([raw[1] + 1]) + body + b"\x00",
        "wrong_tag": b"\x31" + raw[1:],
        "length_lies": raw[:1] + bytes([raw[1] - 1]) + body,
        "padded_r": _der(b"\x00\x00" + r.to_bytes(32, "big"), s.to_bytes(32, "big")),
        "negative_r": _der(b"\x80" + bytes(31), s.to_bytes(32, "big")),
        "zero_r": _der(b"\x00", s.to_bytes(32, "big")),
        "r_of_the_order": _der(b"\x00" + SM2_ORDER.to_bytes(32, "big"), s.to_bytes(32, "big")),
        "one_integer": b"\x30\x22\x02\x20" + r.to_bytes(32, "big"),
        "empty": b"",
    }


def _der(r: bytes, s: bytes) -> bytes:
    body = b"\x02" + bytes([len(r)]) + r + b"\x02" + bytes([len(s)]) + s
    return b"\x30" + bytes([len(body)]) + body


@pytest.mark.parametrize("variant", list(_der_variants(bytes.fromhex("3006020101020101"))))
def test_malformed_der_is_refused_by_name_and_never_raises(variant: str) -> None:
    doc = sign("gm")
    bad = _der_variants(base64.b64decode(doc["signature"]))[variant]
    assert der_pair(bad) is None
    assert not verify_signature(resigned(doc, bad), PUBLIC["gm"])
    assert codes(resigned(doc, bad), "gm") == "signature.malformed"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("signature", [None, 7, "not base64!", ""])
def test_a_missing_or_undecodable_signature_is_malformed(profile: str, signature: Any) -> None:
    doc = {**sign(profile), "signature": signature}
    assert not verify_signature(doc, PUBLIC[profile])
    assert codes(doc, profile) == "signature.malformed"


def test_an_ed25519_signature_of_another_length_is_malformed() -> None:
    raw = base64.b64decode(sign("intl")["signature"])
    assert codes(resigned(sign("intl"), raw[:63]), "intl") == "signature.malformed"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(list(PROFILES)))
def test_any_bytes_as_a_signature_are_refused_without_raising(raw: bytes, profile: str) -> None:
    doc = resigned(sign(profile), raw)
    assert not verify_signature(doc, PUBLIC[profile])
    problem = signature_problem(doc, PUBLIC[profile])
    assert problem is not None and problem.code.startswith("signature.")


# Against OpenSSL's command line ----------------------------------------------------------------


def openssl(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OPENSSL, *argv], capture_output=True, timeout=30, check=False)


def openssl_sign(key_pem: Path, message: Path, out: Path, *options: str) -> None:
    made = openssl(
        *("pkeyutl", "-sign", "-rawin", "-digest", "sm3", *options),
        *("-inkey", str(key_pem), "-in", str(message), "-out", str(out)),
    )
    assert made.returncode == 0, made.stderr


def test_openssl_verifies_an_envelope_signed_here(tmp_path: Path) -> None:
    doc = sign("gm", record_items(resident(3), "b"))
    (tmp_path / "pub.pem").write_bytes(public_key_pem(KEYS["gm"]))
    (tmp_path / "msg").write_bytes(canonical_bytes(doc))
    (tmp_path / "sig").write_bytes(base64.b64decode(doc["signature"]))

    def verify(*options: str) -> subprocess.CompletedProcess[bytes]:
        return openssl(
            *("pkeyutl", "-verify", "-rawin", "-digest", "sm3", *options),
            *("-pubin", "-inkey", str(tmp_path / "pub.pem")),
            *("-sigfile", str(tmp_path / "sig"), "-in", str(tmp_path / "msg")),
        )

    verified = verify("-pkeyopt", f"distid:{USER_ID}")
    assert verified.returncode == 0 and b"Verified Successfully" in verified.stdout
    # OpenSSL's own default id is empty: the id is part of what was signed.
    assert verify().returncode != 0
    assert verify("-pkeyopt", "distid:ALICE123@YAHOO.COM").returncode != 0


def test_an_openssl_key_and_signature_verify_here(tmp_path: Path) -> None:
    key_pem, pub_pem = tmp_path / "key.pem", tmp_path / "pub.pem"
    assert openssl("genpkey", "-algorithm", "SM2", "-out", str(key_pem)).returncode == 0
    assert openssl("pkey", "-in", str(key_pem), "-pubout", "-out", str(pub_pem)).returncode == 0
    key = load_private_key_pem(key_pem.read_bytes(), GM)  # PKCS#8, as openssl writes it
    public = load_public_key(public_key_b64(key))
    assert public_key_pem(public) == pub_pem.read_bytes()  # the same key, the same SPKI

    doc = sign("gm", record_items(resident(4), "c"), key=key)
    (tmp_path / "msg").write_bytes(canonical_bytes(doc))
    signatures = {}
    for name, options in {
        "id": ("-pkeyopt", f"distid:{USER_ID}"),
        "default_id": (),
        "other_id": ("-pkeyopt", "distid:ALICE123@YAHOO.COM"),
    }.items():
        openssl_sign(key_pem, tmp_path / "msg", tmp_path / name, *options)
        signatures[name] = resigned(doc, (tmp_path / name).read_bytes())

    assert verify_signature(signatures["id"], public)
    assert signature_problem(signatures["id"], public) is None
    for name in ("default_id", "other_id"):
        assert not verify_signature(signatures[name], public)
        problem = signature_problem(signatures[name], public)
        assert problem is not None and problem.code == "signature.invalid"
        assert USER_ID in problem.message
    # And what this side signed with openssl's key, openssl's public key verifies.
    assert verify_signature(doc, load_public_key(public_key_b64(key)))


def test_a_key_of_the_other_profile_is_refused_when_loaded_for_a_profile() -> None:
    from adapters.envelope import private_key_pem

    with pytest.raises(KeyProfileError) as refused:
        load_private_key_pem(private_key_pem(KEYS["intl"]), GM)
    assert refused.value.code == "key.profile"
    with pytest.raises(KeyProfileError) as refused:
        load_private_key_pem(private_key_pem(KEYS["gm"]), INTL)
    assert refused.value.code == "key.profile"
    # Without a profile, either loads (an adapter host that does not know its consortium's).
    assert public_key_b64(load_private_key_pem(private_key_pem(KEYS["gm"]))) == public_key_b64(
        KEYS["gm"]
    )
