"""RFC 6962 / 9162 conformance: every vector and every probe in shared/testdata/merkle, as they
are (transparency-dev/merkle's own test data): valid proofs verify, tampered ones are refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from audit.merkle import (
    SHA256,
    consistency_proof,
    inclusion_proof,
    root,
    subtree_of,
    verify_consistency,
    verify_inclusion,
)

MERKLE = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "merkle"
VECTORS = json.loads((MERKLE / "rfc6962_vectors.json").read_text())
LEAVES = [SHA256.leaf_hash(bytes.fromhex(v["hex"])) for v in VECTORS["leaf_inputs"]]
PROBES = sorted((MERKLE / "transparency-dev").rglob("*.json"))


def hx(value: str) -> bytes:
    return bytes.fromhex(value)


def b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def test_the_probe_files_are_there() -> None:
    assert len([p for p in PROBES if "/inclusion/" in str(p)]) > 50
    assert len([p for p in PROBES if "/consistency/" in str(p)]) > 50


def test_hasher_vectors() -> None:
    for v in VECTORS["hasher_vectors"]:
        if v["kind"] == "empty_root":
            got = SHA256.empty_root()
        elif v["kind"] == "leaf":
            got = SHA256.leaf_hash(v["data_ascii"].encode())
        else:
            got = SHA256.node_hash(v["left_ascii"].encode(), v["right_ascii"].encode())
        assert got == hx(v["want"]), v["desc"]


def test_roots_and_subtree_nodes() -> None:
    assert root([]) == hx(VECTORS["empty_tree_root"]["hex"])
    for v in VECTORS["roots_by_tree_size"]:
        assert root(LEAVES[: v["tree_size"]]) == hx(v["root"]), v["tree_size"]
    for v in VECTORS["complete_subtree_node_hashes"]:
        width = 1 << v["level"]
        assert root(LEAVES[v["index"] * width : (v["index"] + 1) * width]) == hx(v["hash"])


def test_inclusion_proof_vectors_are_generated_and_verified() -> None:
    for v in VECTORS["inclusion_proofs"]:
        leaf = SHA256.leaf_hash(hx(v["leaf_input_hex"]))
        proof = [hx(p) for p in v["proof"]]
        assert inclusion_proof(v["leaf_index"], v["tree_size"], subtree_of(LEAVES)) == proof
        assert verify_inclusion(SHA256, v["leaf_index"], v["tree_size"], leaf, proof, hx(v["root"]))


def test_consistency_proof_vectors_are_generated_and_verified() -> None:
    for v in VECTORS["consistency_proofs"]:
        proof = [hx(p) for p in v["proof"]]
        if v["size1"] > 0:
            assert consistency_proof(v["size1"], v["size2"], subtree_of(LEAVES)) == proof
        assert verify_consistency(
            SHA256, v["size1"], v["size2"], proof, hx(v["root1"]), hx(v["root2"])
        )


@pytest.mark.parametrize(
    "path", PROBES, ids=lambda p: str(p.relative_to(MERKLE / "transparency-dev"))
)
def test_probe(path: Path) -> None:
    probe: dict[str, Any] = json.loads(path.read_text())
    proof = [b64(p) for p in probe.get("proof") or []]
    if "leafIdx" in probe:
        ok = verify_inclusion(
            SHA256,
            probe["leafIdx"],
            probe["treeSize"],
            b64(probe["leafHash"]),
            proof,
            b64(probe["root"]),
        )
    else:
        ok = verify_consistency(
            SHA256, probe["size1"], probe["size2"], proof, b64(probe["root1"]), b64(probe["root2"])
        )
    assert ok is not probe.get("wantErr", False), probe.get("desc")


# Properties over random trees ------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from audit.frontier import Frontier  # noqa: E402

trees = st.integers(min_value=1, max_value=300).flatmap(
    lambda n: st.tuples(
        st.just([SHA256.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]),
        st.integers(0, n - 1),
        st.integers(1, n),
    )
)


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


@given(trees)
def test_generated_inclusion_proofs_verify_and_any_change_fails(tree: tuple) -> None:
    leaves, index, _ = tree
    size = len(leaves)
    top = root(leaves)
    proof = inclusion_proof(index, size, subtree_of(leaves))
    assert verify_inclusion(SHA256, index, size, leaves[index], proof, top)
    assert not verify_inclusion(SHA256, index, size, flip(leaves[index]), proof, top)
    # Another size (with that tree's own root) needs another proof.
    bigger = root([*leaves, SHA256.leaf_hash(b"one more")])
    assert not verify_inclusion(SHA256, index, size + 1, leaves[index], proof, bigger)
    if proof:
        assert not verify_inclusion(
            SHA256, index, size, leaves[index], [flip(proof[0]), *proof[1:]], top
        )
        assert not verify_inclusion(
            SHA256, index ^ 1 if index ^ 1 < size else index - 1, size, leaves[index], proof, top
        )


@given(trees)
def test_generated_consistency_proofs_verify_and_any_change_fails(tree: tuple) -> None:
    leaves, _, old = tree
    size = len(leaves)
    proof = consistency_proof(old, size, subtree_of(leaves))
    r1, r2 = root(leaves[:old]), root(leaves)
    assert verify_consistency(SHA256, old, size, proof, r1, r2)
    assert not verify_consistency(SHA256, old, size, proof, flip(r1), r2)
    assert not verify_consistency(SHA256, old, size, proof, r1, flip(r2))
    if proof:
        assert not verify_consistency(SHA256, old, size, [*proof[:-1], flip(proof[-1])], r1, r2)
    bigger = root([*leaves, SHA256.leaf_hash(b"one more")])
    assert not verify_consistency(SHA256, old, size + 1, proof, r1, bigger)


@given(st.integers(min_value=0, max_value=200))
def test_the_frontier_root_is_the_tree_root_at_every_size(n: int) -> None:
    leaves = [SHA256.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    frontier = Frontier()
    for i, leaf in enumerate(leaves):
        frontier.append(leaf, SHA256)
        assert frontier.root(SHA256) == root(leaves[: i + 1])
    assert frontier.root(SHA256) == root(leaves)
