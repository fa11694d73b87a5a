"""Verifying the log in ranges side by side gives the very report of the one-pass verifier:
the same first bad record, the same finding, the same count of records and heads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.merkle import SHA256, SM3, Hasher, root
from audit.postgres import GENESIS, chain_link
from audit.verify import Report, combine, verify_span
from tests.unit.test_audit_verify import Row, log, run


def in_ranges(
    rows: list[Row],
    heads: dict[int, bytes],
    tree_size: int,
    chunk: int,
    per: int,
    workers: int,
    hasher: Hasher = SHA256,
) -> Report:
    """As audit.verify_rows splits the work: worker i takes i * per <= seq < (i + 1) * per,
    the first also anything below, the last anything above."""
    chains = {seq: chain for seq, _, _, chain in rows}
    spans = []
    for i in range(workers):
        lo, hi = i * per, (i + 1) * per
        part = [r for r in rows if (i == 0 or r[0] >= lo) and (i == workers - 1 or r[0] < hi)]
        previous = GENESIS if lo == 0 else chains.get(lo - 1, b"")
        spans.append(verify_span(part, lo, previous, sorted(heads), chunk, hasher))
    return combine(spans, heads, tree_size, chunk, hasher)


def same(a: Report, b: Report) -> bool:
    return (a.findings[:1], a.records, a.heads_checked) == (
        b.findings[:1],
        b.records,
        b.heads_checked,
    )


def tampered(rows: list[Row], kind: str, i: int, hasher: Hasher) -> list[Row]:
    rows = list(rows)
    seq, text, leaf, chain = rows[i]
    if kind == "changed":
        rows[i] = (seq, text.replace("doctor", "doctoR"), leaf, chain)
    elif kind == "changed and rehashed":
        text = text.replace("doctor", "doctoR")
        rows[i] = (seq, text, hasher.leaf_hash(text.encode()), chain)
    elif kind == "deleted":
        del rows[i]
    elif kind == "truncated":
        del rows[i:]
    elif kind == "negative":
        rows.insert(0, (-1, text, leaf, chain))
    elif kind == "swapped" and i + 1 < len(rows):  # the forger recomputes leaves and chain
        texts = [r[1] for r in rows]
        texts[i], texts[i + 1] = texts[i + 1], texts[i]
        forged, link = [], GENESIS
        for n, t in enumerate(texts):
            link = chain_link(link, t, hasher)
            forged.append((n, t, hasher.leaf_hash(t.encode()), link))
        rows = forged
    return rows


kinds = st.sampled_from(
    ["intact", "changed", "changed and rehashed", "deleted", "truncated", "negative", "swapped"]
)


@settings(max_examples=300)
@given(
    st.integers(min_value=1, max_value=70),
    kinds,
    st.data(),
    st.sampled_from([1, 2, 4, 8, 16]),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([SHA256, SM3]),
)
def test_ranges_side_by_side_report_what_one_pass_reports(
    n: int, kind: str, data: st.DataObject, chunk: int, workers: int, hasher: Hasher
) -> None:
    rows, _ = log(n, hasher)
    leaves = [leaf for _, _, leaf, _ in rows]
    sizes = data.draw(st.sets(st.integers(1, n + 3), max_size=6))
    heads = {s: root(leaves[:s], hasher) if s <= n else b"\x07" * 32 for s in sizes}
    if data.draw(st.booleans()) and heads:  # a signed head whose root the rows do not give
        heads[data.draw(st.sampled_from(sorted(heads)))] = b"\x09" * 32
    forged = tampered(rows, kind, data.draw(st.integers(0, n - 1)), hasher)
    per = -(-n // (workers * chunk)) * chunk
    expected = run(forged, heads, n, hasher)
    got = in_ranges(forged, heads, n, chunk, per, workers, hasher)
    assert same(got, expected), (got, expected)
    honest = forged == rows and all(s <= n and heads[s] == root(leaves[:s], hasher) for s in heads)
    assert got.ok == honest


@pytest.mark.parametrize("hasher", [SHA256, SM3], ids=lambda h: h.name)
def test_a_head_inside_a_chunk_is_checked_against_the_chunk_pieces(hasher: Hasher) -> None:
    rows, _ = log(40, hasher)
    leaves = [leaf for _, _, leaf, _ in rows]
    heads = {size: root(leaves[:size], hasher) for size in (5, 13, 16, 27, 40)}
    report = in_ranges(rows, heads, 40, 8, 24, 2, hasher)
    assert report.ok and report.records == 40 and report.heads_checked == 5
    other = SM3 if hasher is SHA256 else SHA256  # the same rows checked with the other hash
    assert in_ranges(rows, heads, 40, 8, 24, 2, other).findings[0].code == "audit.record_changed"
    heads[27] = root(leaves[:26], hasher)
    report = in_ranges(rows, heads, 40, 8, 24, 2, hasher)
    assert (report.findings[0].code, report.findings[0].seq) == ("audit.head_mismatch", 26)
