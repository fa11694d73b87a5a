"""The log verifier (pure): intact logs pass; each kind of tampering names its first bad record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from audit.frontier import Frontier
from audit.merkle import SHA256, root
from audit.postgres import GENESIS, canonical_text, chain_link
from audit.verify import LogVerifier

Row = tuple[int, str, bytes, bytes]


def log(n: int) -> tuple[list[Row], dict[int, bytes]]:
    rows, chain, leaves = [], GENESIS, []
    for seq in range(n):
        text = canonical_text({"action": "read", "person": f"doctor-{seq % 3}", "seq": seq})
        chain = chain_link(chain, text)
        leaves.append(SHA256.leaf_hash(text.encode()))
        rows.append((seq, text, leaves[-1], chain))
    heads = {size: root(leaves[:size]) for size in (n // 2, n) if size}
    return rows, heads


def run(rows: list[Row], heads: dict[int, bytes], tree_size: int):  # type: ignore[no-untyped-def]
    verifier = LogVerifier(heads)
    for row in rows:
        if not verifier.feed(*row):
            break
    return verifier.finish(tree_size)


sizes = st.integers(min_value=4, max_value=60)


@given(sizes)
def test_an_intact_log_verifies_against_its_heads(n: int) -> None:
    rows, heads = log(n)
    report = run(rows, heads, n)
    assert report.ok and report.records == n and report.heads_checked == 2


@given(sizes, st.data())
def test_a_changed_byte_is_named(n: int, data: st.DataObject) -> None:
    rows, heads = log(n)
    i = data.draw(st.integers(0, n - 1))
    seq, text, leaf, chain = rows[i]
    rows[i] = (seq, text.replace("doctor", "doctoR"), leaf, chain)
    assert run(rows, heads, n).findings[0].seq == i


@given(sizes, st.data())
def test_a_deleted_row_is_named(n: int, data: st.DataObject) -> None:
    rows, heads = log(n)
    i = data.draw(st.integers(0, n - 2))
    report = run(rows[:i] + rows[i + 1 :], heads, n)
    assert (report.findings[0].code, report.findings[0].seq) == ("audit.record_missing", i)


@given(sizes, st.data())
def test_swapped_rows_are_named_even_with_a_recomputed_chain(n: int, data: st.DataObject) -> None:
    rows, heads = log(n)
    i = data.draw(st.integers(0, n - 2))
    texts = [r[1] for r in rows]
    texts[i], texts[i + 1] = texts[i + 1], texts[i]
    forged, chain = [], GENESIS  # the forger recomputes leaves and chain for the new order
    for seq, text in enumerate(texts):
        chain = chain_link(chain, text)
        forged.append((seq, text, SHA256.leaf_hash(text.encode()), chain))
    report = run(forged, heads, n)
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
