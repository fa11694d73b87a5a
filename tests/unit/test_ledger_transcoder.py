"""The ledger's orjson transcoder reads and writes what the library's JSON transcoder does:
whatever one wrote, the other reads back as the same values, for event states of every shape
the ledger stores (ids, times, amounts, envelopes as text, odd strings and numbers)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoder,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.ingest.recorder import ledger_env
from exchange.ingest.transcoder import FastJSONTranscoder


def registered(transcoder: JSONTranscoder) -> Transcoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY, FAST, ALWAYS = (
    registered(JSONTranscoder()),
    registered(FastJSONTranscoder()),
    registered(FastJSONTranscoder()),
)
ALWAYS.large = -1  # orjson for every state, however small, so the property covers it

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),  # lone surrogates included
    st.text(alphabet='{}[]":,\\ \n\t\u2028\x00é中').map(lambda s: s * 20),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), None])),
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner))


values = st.recursive(leaves, containers, max_leaves=20)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return type(b) is list and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=8))
def test_either_transcoder_reads_what_the_other_wrote(state: dict[str, Any]) -> None:
    expected = LIBRARY.decode(LIBRARY.encode(state))
    for fast in (FAST, ALWAYS):
        assert same(fast.decode(fast.encode(state)), expected)
        assert same(fast.decode(LIBRARY.encode(state)), expected)
        assert same(LIBRARY.decode(fast.encode(state)), expected)


def test_a_submission_state_is_written_by_orjson_and_read_back() -> None:
    state = {
        "originator_id": UUID(int=7),
        "timestamp": datetime(2026, 11, 1, 9, tzinfo=UTC),
        "envelope": '{"events":[{"kind":"observation","payload":{"value":"7.1"}}]}' * 30,
        "patient_ids": [str(UUID(int=n)) for n in range(3)],
        "amount": Decimal("7.10"),
    }
    text = FAST.encode(state)
    assert b'"_type_":"uuid_hex"' in text and b'"_type_":"decimal_str"' in text
    assert FAST.decode(text) == state
    assert ledger_env("postgresql://u@h/db", "k")["TRANSCODER_TOPIC"].endswith(
        ":FastJSONTranscoder"
    )
