"""The log's canonical JSON: orjson writes, byte for byte, what the standard library's sorted,
compact, non-ASCII-as-is JSON writes, for every value an audit record holds."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from audit.postgres import canonical_bytes, canonical_text

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(st.characters(exclude_categories=["Cs"]))  # any text a record can hold
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), values, max_size=6))
def test_orjson_writes_the_canonical_text(record: dict[str, Any]) -> None:
    assert canonical_bytes(record) == canonical_text(record).encode()


def test_what_orjson_refuses_still_has_its_canonical_text() -> None:
    record = {"big": 2**70, "nested": {"n": [1, "\u2028", '\x00\x1f"']}}
    assert canonical_bytes(record) == canonical_text(record).encode()
    assert canonical_bytes({1: "a"}) == b'{"1":"a"}'
