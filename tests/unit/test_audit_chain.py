"""The audit hash chain notices a changed, removed, reordered or inserted record."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from audit.chain import GENESIS, first_broken, link_hash


def chain(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], bytes, bytes]]:
    rows, previous = [], GENESIS
    for seq, record in enumerate(records, start=1):
        h = link_hash(previous, record)
        rows.append((seq, record, previous, h))
        previous = h
    return rows


records = st.lists(st.fixed_dictionaries({"person": st.text(max_size=8),
                                          "decision": st.sampled_from(["permit", "deny"])}),
                   min_size=2, max_size=12)


@given(records)
def test_an_intact_chain_holds(rs: list[dict[str, Any]]) -> None:
    assert first_broken(chain(rs)) is None


@given(records, st.data())
def test_a_changed_record_is_named(rs: list[dict[str, Any]], data: st.DataObject) -> None:
    rows = chain(rs)
    i = data.draw(st.integers(0, len(rows) - 1))
    seq, record, prev, h = rows[i]
    rows[i] = (seq, {**record, "decision": "tampered"}, prev, h)
    assert first_broken(rows) == seq


@given(records, st.data())
def test_a_removed_or_reordered_record_is_caught(rs: list[dict[str, Any]], data: st.DataObject) -> None:
    rows = chain(rs)
    i = data.draw(st.integers(0, len(rows) - 2))
    assert first_broken(rows[:i] + rows[i + 1:]) is not None
    swapped = rows[:i] + [rows[i + 1], rows[i]] + rows[i + 2:]
    assert first_broken(swapped) is not None
