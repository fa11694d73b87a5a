"""Digests audit records keep of what lies outside the log (audit/digests.py): made with the
log's hash and named by it (``envelope_sha256`` under the intl crypto profile, as ever;
``envelope_sm3`` under gm), read back from whichever field a record carries, and a digest of
the other profile's hash told apart as a finding. Synthetic data only."""

from __future__ import annotations

import base64
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from audit.digests import ENVELOPE, FOREIGN, Digest, field, hex_digest, recorded
from audit.merkle import HashError
from domain.problems import Problem
from exchange.cli.institutions import fingerprint, fingerprints
from exchange.ingest.answers import audit_record
from exchange.ingest.checks import Checked

HASHES = ("sha256", "sm3")
OTHER = {"sha256": "sm3", "sm3": "sha256"}
ENVELOPE_TEXT = '{"submission_id":"s-1","items":[]}'


def test_the_field_names_the_hash() -> None:
    assert field("envelope", "sha256") == "envelope_sha256"
    assert field("disclosed", "sm3") == "disclosed_sm3"
    with pytest.raises(HashError) as refused:
        field("envelope", "md5")
    assert refused.value.code == "audit.hash_unknown"


def test_the_digests_are_the_hashes_they_name() -> None:
    assert hex_digest(b"abc", "sha256") == hashlib.sha256(b"abc").hexdigest()
    # GB/T 32905-2016, example 1
    assert hex_digest(b"abc", "sm3") == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


@pytest.mark.parametrize("hash_name", HASHES)
def test_a_record_is_read_by_the_field_it_has(hash_name: str) -> None:
    own = {f"envelope_{hash_name}": hex_digest(b"x", hash_name)}
    found = recorded(own, ENVELOPE, hash_name)
    assert found == Digest(ENVELOPE, hash_name, own[f"envelope_{hash_name}"], hash_name)
    assert not found.foreign and found.matches(b"x") and not found.matches(b"y")
    other = OTHER[hash_name]
    theirs = recorded({f"envelope_{other}": hex_digest(b"x", other)}, ENVELOPE, hash_name)
    assert theirs is not None and theirs.foreign and theirs.hash_name == other
    assert theirs.matches(b"x")  # checked with the hash its field names, not the log's
    message = theirs.foreign_message("the anchor of ledger position 7")
    assert f"envelope_{other}" in message and hash_name in message and "position 7" in message
    assert FOREIGN == "audit.digest_hash"


@pytest.mark.parametrize("hash_name", HASHES)
def test_a_record_without_a_digest_has_none(hash_name: str) -> None:
    assert recorded({}, ENVELOPE, hash_name) is None
    assert recorded({"envelope_sha256": None, "envelope_sm3": ""}, ENVELOPE, hash_name) is None
    assert recorded({"envelope_md5": "00"}, ENVELOPE, hash_name) is None


def test_a_record_with_both_is_read_by_the_logs_hash() -> None:
    both = {"envelope_sha256": "aa", "envelope_sm3": "bb"}
    assert recorded(both, ENVELOPE, "sm3") == Digest(ENVELOPE, "sm3", "bb", "sm3")
    assert recorded(both, ENVELOPE, "sha256") == Digest(ENVELOPE, "sha256", "aa", "sha256")


def checked(accepted: bool) -> Checked:
    pending: Any = SimpleNamespace(envelope_text=ENVELOPE_TEXT, valid=SimpleNamespace(items=[1]))
    if accepted:
        return Checked(None, "thc-x", "s-1", pending, position=12)  # type: ignore[arg-type]
    problem = Problem("signature.invalid", "the signature does not verify")
    return Checked(None, "thc-x", "s-1", problems=[problem])  # type: ignore[arg-type]


def test_a_submissions_anchor_under_intl_is_as_it_always_was() -> None:
    record = audit_record(checked(True), "sha256")
    assert record["envelope_sha256"] == hashlib.sha256(ENVELOPE_TEXT.encode()).hexdigest()
    assert "envelope_sm3" not in record
    assert list(record) == [
        "action",
        "institution",
        "submission_id",
        "decision",
        "position",
        "repeat",
        "items",
        "envelope_sha256",
        "reasons",
    ]
    assert audit_record(checked(False), "sha256")["envelope_sha256"] is None


def test_a_submissions_anchor_under_gm_is_sm3_and_says_so() -> None:
    record = audit_record(checked(True), "sm3")
    assert record["envelope_sm3"] == hashlib.new("sm3", ENVELOPE_TEXT.encode()).hexdigest()
    assert "envelope_sha256" not in record
    rejected = audit_record(checked(False), "sm3")
    assert rejected["envelope_sm3"] is None and "envelope_sha256" not in rejected


@pytest.mark.parametrize("hash_name", HASHES)
def test_institution_key_fingerprints_name_their_hash(hash_name: str) -> None:
    key, new = base64.b64encode(b"\x01" * 32).decode(), base64.b64encode(b"\x02" * 32).decode()
    assert fingerprint(key, hash_name) == hashlib.new(hash_name, b"\x01" * 32).hexdigest()
    assert fingerprints(hash_name, key=key) == {f"key_{hash_name}": fingerprint(key, hash_name)}
    assert fingerprints(hash_name, old_key=key, new_key=new) == {
        f"old_key_{hash_name}": fingerprint(key, hash_name),
        f"new_key_{hash_name}": fingerprint(new, hash_name),
    }
