"""The hash chain over audit records (pure).

Each record's hash is SHA-256 over the previous record's hash and the record's canonical
JSON (sorted keys, compact, UTF-8). Changing, removing or reordering any record breaks every
hash after it. (Issue 6 puts an RFC 9162 Merkle tree with signed heads on top of this.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

GENESIS = b"\x00" * 32


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(previous: bytes, record: dict[str, Any]) -> bytes:
    return hashlib.sha256(previous + canonical(record)).digest()


def first_broken(rows: Iterable[tuple[int, dict[str, Any], bytes, bytes]]) -> int | None:
    """Given (seq, record, prev_hash, hash) in order, the seq of the first bad row, or None."""
    previous = GENESIS
    expected_seq = None
    for seq, record, prev_hash, row_hash in rows:
        if expected_seq is not None and seq != expected_seq:
            return seq
        if prev_hash != previous or link_hash(previous, record) != row_hash:
            return seq
        previous = row_hash
        expected_seq = seq + 1
    return None
