"""The gm profile's Merkle tree: RFC 6962's structure with SM3 in place of SHA-256. Roots match
the RFC's recursive definition computed here independently; inclusion and consistency proofs
verify with SM3 and fail when any part of them is taken for SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.frontier import Frontier
from audit.merkle import (
    SHA256,
    SM3,
    Hasher,
    HashError,
    consistency_proof,
    hasher_named,
    inclusion_proof,
    root,
    subtree_of,
    verify_consistency,
    verify_inclusion,
)


def sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def mth(entries: list[bytes]) -> bytes:
    """RFC 6962 §2.1, word for word, with SM3: the empty tree, a leaf, and the split at the
    largest power of two below n."""
    n = len(entries)
    if n == 0:
        return sm3(b"")
    if n == 1:
        return sm3(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return sm3(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def entries(n: int) -> list[bytes]:
    return [f"record {i}".encode() for i in range(n)]


trees = st.integers(min_value=1, max_value=130).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, n))
)


def test_the_hashers_are_found_by_the_profiles_hash_names() -> None:
    assert hasher_named("sm3") is SM3 and hasher_named("sha256") is SHA256
    with pytest.raises(HashError) as err:
        hasher_named("md5")
    assert err.value.code == "audit.hash_unknown"


@given(st.integers(min_value=0, max_value=70))
def test_sm3_roots_are_rfc_6962_trees_at_every_size(n: int) -> None:
    data = entries(n)
    leaves = [SM3.leaf_hash(d) for d in data]
    assert root(leaves, SM3) == mth(data)
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf, SM3)
    assert frontier.root(SM3) == mth(data)
    if n:
        assert root([SHA256.leaf_hash(d) for d in data]) != mth(data)


def test_a_small_tree_is_the_rfc_shape() -> None:
    a, b, c = (SM3.leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert root([a, b, c], SM3) == sm3(b"\x01" + sm3(b"\x01" + a + b) + c)
    assert root([], SM3) == sm3(b"")


@given(trees)
def test_sm3_inclusion_proofs_verify_and_fail_when_mixed_with_sha256(
    tree: tuple[int, int, int],
) -> None:
    n, index, _ = tree
    data = entries(n)
    leaves = [SM3.leaf_hash(d) for d in data]
    top = mth(data)
    proof = inclusion_proof(index, n, subtree_of(leaves, SM3))
    assert verify_inclusion(SM3, index, n, leaves[index], proof, top)
    # A SHA-256 leaf, or a proof checked with SHA-256 (a one-leaf tree's proof is empty: no
    # hash is taken), or a SHA-256 tree's proof: never.
    sha_leaf = SHA256.leaf_hash(data[index])
    assert not verify_inclusion(SM3, index, n, sha_leaf, proof, top)
    if proof:
        assert not verify_inclusion(SHA256, index, n, leaves[index], proof, top)
        sha_proof = inclusion_proof(index, n, subtree_of([SHA256.leaf_hash(d) for d in data]))
        assert not verify_inclusion(SM3, index, n, leaves[index], sha_proof, top)


@given(trees)
def test_sm3_consistency_proofs_verify_and_fail_when_mixed_with_sha256(
    tree: tuple[int, int, int],
) -> None:
    n, _, old = tree
    data = entries(n)
    leaves = [SM3.leaf_hash(d) for d in data]
    r1, r2 = mth(data[:old]), mth(data)
    proof = consistency_proof(old, n, subtree_of(leaves, SM3))
    assert verify_consistency(SM3, old, n, proof, r1, r2)
    if old < n:  # equal sizes: no hashing at all, nothing to mix up
        assert not verify_consistency(SHA256, old, n, proof, r1, r2)
        sha = [SHA256.leaf_hash(d) for d in data]
        sha_proof = consistency_proof(old, n, subtree_of(sha))
        assert not verify_consistency(SM3, old, n, sha_proof, r1, r2)
        assert not verify_consistency(SM3, old, n, proof, root(sha[:old]), r2)


@pytest.mark.parametrize("hasher", [SHA256, SM3], ids=lambda h: h.name)
def test_many_hashes_each_item_as_digest_does(hasher: Hasher) -> None:
    items = [b"", b"a", b"\x01" + b"x" * 64, "记录".encode() * 300]
    assert hasher.many(items) == [hasher.digest(i) for i in items]
    assert hasher.many(iter(items)) == [hasher.digest(i) for i in items]
