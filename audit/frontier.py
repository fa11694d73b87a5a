"""The right edge of an append-only Merkle tree: the roots of its perfect subtrees.

Appending a leaf merges equal-sized subtrees and reports each node it completes, so a store
can keep every complete node (and answer proofs with a few lookups) while computing the
tree's root at any size in O(log n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class NodeHasher(Protocol):
    def node_hash(self, left: bytes, right: bytes) -> bytes: ...

    def empty_root(self) -> bytes: ...


@dataclass
class Frontier:
    """Perfect-subtree roots from left to right; their sizes are the set bits of ``size``."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf_hash: bytes, hasher: NodeHasher) -> list[tuple[int, int, bytes]]:
        """Add leaf ``size``; return the nodes it completes as (level, index, hash)."""
        index = self.size
        self.hashes.append(leaf_hash)
        self.size += 1
        completed = []
        level = 0
        while (index >> level) & 1:  # the subtree at this level just became complete
            right = self.hashes.pop()
            left = self.hashes.pop()
            level += 1
            node = hasher.node_hash(left, right)
            self.hashes.append(node)
            completed.append((level, index >> level, node))
        return completed

    def root(self, hasher: NodeHasher) -> bytes:
        if not self.hashes:
            return hasher.empty_root()
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = hasher.node_hash(left, result)
        return result


def perfect_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """Split leaves [start, end) into maximal aligned perfect subtrees, as (level, index).

    For the ranges RFC 9162 proofs use (start aligned to the range's largest power of two),
    the range's Merkle hash is the right fold of its pieces' hashes.
    """
    pieces = []
    while start < end:
        level = 0
        while (start % (1 << (level + 1)) == 0) and start + (1 << (level + 1)) <= end:
            level += 1
        pieces.append((level, start >> level))
        start += 1 << level
    return pieces


def fold(hashes: Sequence[bytes], hasher: NodeHasher) -> bytes:
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = hasher.node_hash(left, result)
    return result
