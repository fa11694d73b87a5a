"""The projection reads a stored envelope without validating it again (projections/stored.py).
What it builds must be exactly what full validation gives: the same payload values and the
same rows, for every adapter's real output and for generated variants of it (other number and
time formats, defaults left out, fields removed), and validation takes over where the reader
is not sure."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4, uuid5

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from adapters.envelope import build_envelope, new_private_key
from cryptoprofile import INTL
from domain.clinical import ENTRY_KINDS, PAYLOAD_MODELS
from domain.submission import CURRENT_SCHEMA, Submission, validate_envelope
from projections.batch import Changes
from projections.fields import FieldCipher
from projections.record import RecordApplier
from projections.render import _ENTRY_NS, entry_id
from projections.stored import FAST_KINDS, StoredReader, payload_reader
from tests.unit.test_validation_paths import CORPUS, KINDS, envelope, mutated, paths

FIELDS = FieldCipher(b"unit-test-projection-key-32bytes", INTL)

KEY = new_private_key()

# Values in other formats than the adapters write, for fields of every type.
VARIANTS = [
    "2026-06-01T08:00:00Z",
    "2026-06-01T08:00:00.5+08:00",
    "2026-06-01T08:00:00.123456-05:30",
    "2026-06-01T08:00:00.1234567+08:00",
    "2026-06-01 08:00:00+08:00",
    "2026-06-01T08:00+08:00",
    "2026-06-01T08:00:00",
    "2026-06-01",
    "20260601",
    1780000000,
    "1780000000",
    7,
    7.25,
    0.1,
    1e20,
    1.5e20,
    5e-7,
    -0.0,
    "7.10",
    "007.50",
    "1E+2",
    " 7 ",
    "-3",
    5.0,
    "5",
    True,
    [],
    None,
    "x" * 40,
]


@st.composite
def varied(draw: st.DrawFn) -> dict[str, Any]:
    """A corpus envelope with some values put in other formats, or left out."""
    if draw(st.booleans()):
        doc = draw(mutated())
    else:  # corpus items as they are, most of them accepted once the variants are in
        picks = draw(st.lists(st.integers(0, len(CORPUS) - 1), min_size=1, max_size=6))
        doc = envelope(unique([copy.deepcopy(CORPUS[i]) for i in picks]))
    for _ in range(draw(st.integers(0, 4))):
        if not doc["events"]:
            break
        item = doc["events"][draw(st.integers(0, len(doc["events"]) - 1))]
        if not isinstance(item, dict) or not isinstance(item.get("payload"), dict):
            continue
        where = draw(st.sampled_from(paths(item["payload"])[1:] or [("absent",)]))
        parent = item["payload"]
        for part in where[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and draw(st.booleans()) and where[-1] in parent:
            del parent[where[-1]]
        elif isinstance(parent, (dict, list)):
            parent[where[-1]] = draw(st.sampled_from(VARIANTS))
    return doc


def attributes(value: Any) -> Any:
    """A payload's values as plain data, whether a pydantic model or the reader's namespace."""
    if isinstance(value, BaseModel):
        return {name: attributes(getattr(value, name)) for name in type(value).model_fields}
    if hasattr(value, "__dict__"):
        return {name: attributes(v) for name, v in vars(value).items()}
    if isinstance(value, list):
        return [attributes(v) for v in value]
    if isinstance(value, datetime):  # the same instant, offset and text
        return (value, value.utcoffset(), value.isoformat())
    return (type(value), value, str(value))


async def _no_lookup(code: str) -> str | None:
    return f"机构{code}"


def accepted(doc: dict[str, Any]) -> Any:
    """The ledger event that stores ``doc``."""
    patients = [str(uuid4()) for _ in range(3)]
    return Submission(
        institution=doc["institution"],
        submission_id=doc["submission_id"],
        envelope=json.dumps(doc, ensure_ascii=False),
        patient_ids=[patients[i % 3] for i in range(len(doc["events"]))],
        received_at=datetime(2026, 11, 1, tzinfo=UTC),
    ).collect_events()[0]


def rows(event: Any, *, fast: bool) -> Changes:
    """What the projection writes for a stored envelope, read either way."""
    applier, changes = RecordApplier(_no_lookup, FIELDS), Changes()
    if not fast:
        applier.stored.read = lambda doc: None  # type: ignore[method-assign]
    asyncio.run(applier.apply(changes, 7, event))
    return changes


def same_either_way(doc: dict[str, Any]) -> bool:
    """Whether an accepted ``doc`` reads the same both ways; False if it is not accepted."""
    valid, _ = validate_envelope(doc)
    if valid is None:
        return False
    stored = StoredReader(CURRENT_SCHEMA).read(json.loads(json.dumps(doc)))
    assert stored is not None
    assert (stored.submission_id, stored.institution) == (valid.submission_id, valid.institution)
    assert stored.sent_at == valid.sent_at
    assert len(stored.items) == len(valid.items)
    for fast, careful in zip(stored.items, valid.items, strict=True):
        assert (fast.index, fast.source_id, fast.kind, fast.record, fast.amends) == (
            careful.index,
            careful.source_id,
            careful.kind,
            careful.record,
            careful.amends,
        )
        assert attributes(fast.payload) == attributes(careful.payload)
    event = accepted(doc)
    assert rows(event, fast=True) == rows(event, fast=False)
    return True


def unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for i in items:
        record = i.get("amends") or i.get("record") or i["source_id"]
        if i["source_id"] in seen or record in seen:
            continue
        seen |= {i["source_id"], record}
        out.append(i)
    return out


def test_every_adapters_output_reads_the_same_without_validation() -> None:
    assert len(KINDS) >= 9
    items = unique(CORPUS)
    read = 0
    for start in range(0, len(items), 40):
        doc = build_envelope(
            institution="thc-1",
            key=KEY,
            sent_at=datetime(2026, 11, 1, 9, tzinfo=UTC),
            items=copy.deepcopy(items[start : start + 40]),
        )
        assert same_either_way(doc)
        read += 1
    assert read >= 3


def test_the_reader_reads_every_entry_kind_without_pydantic() -> None:
    assert set(ENTRY_KINDS) <= FAST_KINDS
    for kind in FAST_KINDS:
        assert payload_reader(PAYLOAD_MODELS[kind]) is not None, kind
    items = unique([i for i in CORPUS if i["kind"] in FAST_KINDS])
    stored = StoredReader(CURRENT_SCHEMA).read(envelope(items))
    assert stored is not None
    assert not any(isinstance(i.payload, BaseModel) for i in stored.items)


@settings(max_examples=400, deadline=None)
@given(varied())
def test_generated_envelopes_give_the_same_rows_read_either_way(doc: dict[str, Any]) -> None:
    same_either_way(doc)


def test_values_the_reader_is_not_sure_of_are_validated() -> None:
    item = copy.deepcopy(next(i for i in CORPUS if i["kind"] == "observation"))
    item["payload"]["issued"] = "2026-06-01 08:00:00+08:00"  # pydantic's, not the reader's
    doc = envelope([item])
    stored = StoredReader(CURRENT_SCHEMA).read(doc)
    assert stored is not None and isinstance(stored.items[0].payload, BaseModel)
    assert same_either_way(doc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=300))
def test_entry_ids_are_the_uuid5_they_always_were(institution: str, source_id: str) -> None:
    try:
        expected = uuid5(_ENTRY_NS, f"{institution}/{source_id}")
    except UnicodeEncodeError:  # a lone surrogate: neither makes an id of it
        with pytest.raises(UnicodeEncodeError):
            entry_id(institution, source_id)
        return
    made = entry_id(institution, source_id)
    assert made == expected and str(made) == str(expected) and hash(made) == hash(expected)
    assert made.version == 5 and made.bytes == expected.bytes and copy.copy(made) == expected


def test_a_quantity_past_64_bits_renders_rather_than_stopping_the_projection() -> None:
    item = copy.deepcopy(next(i for i in CORPUS if i["kind"] == "observation"))
    item["payload"]["value_quantity"] = {"value": 1e20, "unit": "mmol/L"}
    item["payload"].pop("value_string", None)
    item["payload"].pop("value_coding", None)
    doc = envelope([item])
    assert same_either_way(doc)
    (row,) = rows(accepted(doc), fast=True).entries.values()
    assert '"valueQuantity":{"value":1e+20,' in row[7]
