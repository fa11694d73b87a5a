"""Direct identifiers in the read models: sealed per field for their column, found by keyed
hashes, useless without the key, under each crypto profile and never across them."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from cryptoprofile import INTL, Profile, by_name
from projections.fields import FieldCipher
from tests.factories import resident

KEY = b"unit-test-projection-key-32bytes"
OTHER_KEY = b"another-projection-key-32-bytes!"
PROFILES = [INTL, by_name("gm")]
RESIDENT_IDS = "urn:oid:2.16.156.10011.1.3"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_a_sealed_field_opens_only_for_its_column_and_key(profile: Profile) -> None:
    cipher, rid = FieldCipher(KEY, profile), resident(7)
    token = cipher.seal(rid, "patient_identifiers.value")
    assert rid not in token
    assert token.startswith({"intl": "v1.", "gm": "g1."}[profile.name])
    # Deterministic (a rebuilt read model is the same row for row), but per column.
    assert token == cipher.seal(rid, "patient_identifiers.value")
    assert token != cipher.seal(rid, "patients.demographics")
    assert cipher.open(token, "patient_identifiers.value") == rid
    with pytest.raises(InvalidTag):
        cipher.open(token, "patients.demographics")
    with pytest.raises(InvalidTag):
        FieldCipher(OTHER_KEY, profile).open(token, "patient_identifiers.value")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_a_rebuild_seals_and_hashes_row_for_row_the_same(profile: Profile) -> None:
    """A second cipher on the same key (a restarted exchange, a replay worker) writes the same
    tokens and hashes; a changed token byte does not open."""
    values = [(resident(n), f"col{n % 3}") for n in range(40)]
    first, again = FieldCipher(KEY, profile), FieldCipher(KEY, profile)
    assert [first.seal(v, c) for v, c in values] == [again.seal(v, c) for v, c in values]
    assert [first.lookup(c, v) for v, c in values] == [again.lookup(c, v) for v, c in values]
    assert len({first.seal(v, c) for v, c in values}) == len(values)
    token = first.seal("张三", "patients.demographics")
    assert again.open(token, "patients.demographics") == "张三"
    changed = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(InvalidTag):
        again.open(changed, "patients.demographics")


def test_intl_tokens_and_hashes_are_those_written_before_profiles() -> None:
    """Read models written before the crypto profile open and are found as they were."""
    cipher = FieldCipher(KEY, INTL)
    before = "v1.m8R6BwBxSXNF7Qx3P-8z0zhJ5OQ4-AZAws0p2OMFseXTRrcp-5fLxYTpu3qK"
    assert cipher.seal("synthetic-value-1", "patient_identifiers.value") == before
    assert cipher.open(before, "patient_identifiers.value") == "synthetic-value-1"
    assert (
        cipher.lookup("urn:x", "synthetic-value-1").hex()
        == "48aded1d35e609998d56825c74414007d467a839701eed0049ebbb7291932dc7"
    )


def test_a_token_of_one_profile_is_refused_by_the_other_by_name() -> None:
    intl, gm, rid = FieldCipher(KEY, INTL), FieldCipher(KEY, by_name("gm")), resident(9)
    with pytest.raises(ValueError, match=r"sealed under the intl crypto profile.* is gm"):
        gm.open(intl.seal(rid, "patient_identifiers.value"), "patient_identifiers.value")
    with pytest.raises(ValueError, match=r"sealed under the gm crypto profile.* is intl"):
        intl.open(gm.seal(rid, "patient_identifiers.value"), "patient_identifiers.value")
    with pytest.raises(ValueError, match="not a sealed field"):
        gm.open(rid, "patient_identifiers.value")


def test_lookups_differ_between_profiles() -> None:
    rid = resident(10)
    intl, gm = FieldCipher(KEY, INTL), FieldCipher(KEY, by_name("gm"))
    assert intl.lookup(RESIDENT_IDS, rid) != gm.lookup(RESIDENT_IDS, rid)
    assert len(intl.lookup(RESIDENT_IDS, rid)) == len(gm.lookup(RESIDENT_IDS, rid)) == 32


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_lookups_are_stable_per_key_and_reveal_nothing_without_it(profile: Profile) -> None:
    rid = resident(8)
    a, b = FieldCipher(KEY, profile), FieldCipher(OTHER_KEY, profile)
    assert a.lookup(RESIDENT_IDS, rid) == a.lookup(RESIDENT_IDS, rid)
    assert a.lookup(RESIDENT_IDS, rid) != b.lookup(RESIDENT_IDS, rid)
    assert a.lookup(RESIDENT_IDS, rid) != a.lookup("urn:x", rid)
    with pytest.raises(ValueError, match="32 bytes"):
        FieldCipher(b"short", profile)


def test_the_profile_must_be_given() -> None:
    with pytest.raises(TypeError):
        FieldCipher(KEY)  # type: ignore[call-arg]
