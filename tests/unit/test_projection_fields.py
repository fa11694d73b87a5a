"""Direct identifiers in the read models: sealed per field for their column, found by keyed
hashes, useless without the key."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from projections.fields import FieldCipher
from tests.factories import resident

KEY = b"unit-test-projection-key-32bytes"


def test_a_sealed_field_opens_only_for_its_column_and_key() -> None:
    cipher, rid = FieldCipher(KEY), resident(7)
    token = cipher.seal(rid, "patient_identifiers.value")
    assert rid not in token
    # Deterministic (a rebuilt read model is the same row for row), but per column.
    assert token == cipher.seal(rid, "patient_identifiers.value")
    assert token != cipher.seal(rid, "patients.demographics")
    assert cipher.open(token, "patient_identifiers.value") == rid
    with pytest.raises(InvalidTag):
        cipher.open(token, "patients.demographics")
    with pytest.raises(InvalidTag):
        FieldCipher(b"another-projection-key-32-bytes!").open(token, "patient_identifiers.value")


def test_lookups_are_stable_per_key_and_reveal_nothing_without_it() -> None:
    rid = resident(8)
    a, b = FieldCipher(KEY), FieldCipher(b"another-projection-key-32-bytes!")
    assert a.lookup("urn:oid:2.16.156.10011.1.3", rid) == a.lookup(
        "urn:oid:2.16.156.10011.1.3", rid
    )
    assert a.lookup("urn:oid:2.16.156.10011.1.3", rid) != b.lookup(
        "urn:oid:2.16.156.10011.1.3", rid
    )
    assert a.lookup("urn:oid:2.16.156.10011.1.3", rid) != a.lookup("urn:x", rid)
    with pytest.raises(ValueError, match="32 bytes"):
        FieldCipher(b"short")
