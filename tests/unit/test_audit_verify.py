"""The log verifier (pure): intact logs pass; each kind of tampering names its first bad record,
with SHA-256 (intl) and SM3 (gm) alike; a log is never verified with the other hash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.frontier import Frontier
from audit.merkle import SHA256, SM3, Hasher, root
from audit.postgres import GENESIS, canonical_text, chain_link
from audit.verify import LogVerifier

Row = tuple[int, str, bytes, bytes]
HASHERS = pytest.mark.parametrize("hasher", [SHA256, SM3], ids=lambda h: h.name)


def log(n: int, hasher: Hasher = SHA256) -> tuple[list[Row], dict[int, bytes]]:
    rows, chain, leaves = [], GENESIS, []
    for seq in range(n):
        text = canonical_text({"action": "read", "person": f"doctor-{seq % 3}", "seq": seq})
        chain = chain_link(chain, text, hasher)
        leaves.append(hasher.leaf_hash(text.encode()))
        rows.append((seq, text, leaves[-1], chain))
    heads = {size: root(leaves[:size], hasher) for size in (n // 2, n) if size}
    return rows, heads


def run(rows: list[Row], heads: dict[int, bytes], tree_size: int, hasher: Hasher = SHA256):  # type: ignore[no-untyped-def]
    verifier = LogVerifier(heads, hasher)
    for row in rows:
        if not verifier.feed(*row):
            break
    return verifier.finish(tree_size)


sizes = st.integers(min_value=4, max_value=60)


@HASHERS
@given(sizes)
def test_an_intact_log_verifies_against_its_heads(hasher: Hasher, n: int) -> None:
    rows, heads = log(n, hasher)
    report = run(rows, heads, n, hasher)
    assert report.ok and report.records == n and report.heads_checked == 2


@pytest.mark.parametrize(("made", "checked"), [(SHA256, SM3), (SM3, SHA256)])
def test_a_log_checked_with_the_other_hash_fails_at_its_first_record(
    made: Hasher, checked: Hasher
) -> None:
    rows, heads = log(8, made)
    report = run(rows, heads, 8, checked)
    assert (report.findings[0].code, report.findings[0].seq) == ("audit.record_changed", 0)


def test_sm3_is_the_standard_sm3_and_the_tree_uses_it() -> None:
    # GB/T 32905-2016 Appendix A, example 1: SM3("abc").
    assert SM3.digest(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert SM3.leaf_hash(b"x") == SM3.digest(b"\x00x") != SHA256.leaf_hash(b"x")
    assert SM3.node_hash(b"a" * 32, b"b" * 32) == SM3.digest(b"\x01" + b"a" * 32 + b"b" * 32)
    assert SM3.empty_root() == SM3.digest(b"") and SM3.size == len(SM3.empty_root()) == 32
    assert SM3.many([b"abc", b""]) == [SM3.digest(b"abc"), SM3.empty_root()]


@HASHERS
@given(sizes, st.data())
def test_a_changed_byte_is_named(hasher: Hasher, n: int, data: st.DataObject) -> None:
    rows, heads = log(n, hasher)
    i = data.draw(st.integers(0, n - 1))
    seq, text, leaf, chain = rows[i]
    rows[i] = (seq, text.replace("doctor", "doctoR"), leaf, chain)
    assert run(rows, heads, n, hasher).findings[0].seq == i


@given(sizes, st.data())
def test_a_deleted_row_is_named(n: int, data: st.DataObject) -> None:
    rows, heads = log(n)
    i = data.draw(st.integers(0, n - 2))
    report = run(rows[:i] + rows[i + 1 :], heads, n)
    assert (report.findings[0].code, report.findings[0].seq) == ("audit.record_missing", i)


@HASHERS
@given(sizes, st.data())
def test_swapped_rows_are_named_even_with_a_recomputed_chain(
    hasher: Hasher, n: int, data: st.DataObject
) -> None:
    rows, heads = log(n, hasher)
    i = data.draw(st.integers(0, n - 2))
    texts = [r[1] for r in rows]
    texts[i], texts[i + 1] = texts[i + 1], texts[i]
    forged, chain = [], GENESIS  # the forger recomputes leaves and chain for the new order
    for seq, text in enumerate(texts):
        chain = chain_link(chain, text, hasher)
        forged.append((seq, text, hasher.leaf_hash(text.encode()), chain))
    report = run(forged, heads, n, hasher)
    assert (report.findings[0].code, report.findings[0].seq) == ("audit.record_moved", i)


@given(sizes)
def test_a_truncated_log_is_caught(n: int) -> None:
    rows, heads = log(n)
    assert run(rows[:-1], heads, n).findings[0].code == "audit.truncated"
    assert run(rows[:-1], {}, n).findings[0].code == "audit.truncated"  # the tree state says so


def test_frontier_reports_each_completed_node() -> None:
    f = Frontier()
    completed = [node[:2] for i in range(8) for node in f.append(bytes([i]) * 32, SHA256)]
    assert completed == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]
