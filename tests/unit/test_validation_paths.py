"""The gateway validates an envelope in one call (items typed by kind) and falls back to the
item-by-item path, which names every problem. The two must agree: whatever the fast path
accepts, the careful path accepts identically, and whatever the careful path refuses, the fast
path does not accept. Items come from every adapter's real output, then are mutated."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.csv_export import read_csv
from adapters.csv_mapping import load_mapping
from adapters.fhir import read_fhir
from adapters.hl7v2 import read_hl7v2
from domain.submission import _validate_item_by_item, _validate_typed, validate_envelope
from exchange.demo.data import demo_bundles, demo_residents
from tests.factories import json_values, record_items, resident

ROOT = Path(__file__).resolve().parents[2]
HL7 = ROOT.parent / "shared" / "testdata" / "hl7v2" / "microsoft-fhir-converter"
CSV = ROOT / "samples" / "csv"


def corpus() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted(HL7.glob("*.hl7")):
        items += read_hl7v2(path.read_bytes(), institution="county-hospital").items
    mapping = load_mapping((CSV / "taoyuan-vc.mapping.toml").read_text(encoding="utf-8"))
    for path in sorted(CSV.glob("*.csv")):
        items += read_csv(
            path.read_bytes(), mapping=mapping, institution="taoyuan-vc", filename=path.name
        ).items
    for bundle in demo_bundles("dongcheng-thc", demo_residents(count=3)):
        items += read_fhir(json.dumps(bundle).encode(), institution="dongcheng-thc").items
    items += record_items(resident(5), "f", consent=True)
    return items


CORPUS = corpus()
KINDS = {item["kind"] for item in CORPUS}


def envelope(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "submission_id": "s-1",
        "institution": "thc-1",
        "sent_at": "2026-11-01T09:00:00+08:00",
        "events": items,
        "signature": "c2ln",
    }


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    picks = draw(st.lists(st.integers(0, len(CORPUS) - 1), min_size=1, max_size=6))
    items = [copy.deepcopy(CORPUS[i]) for i in picks]
    for _ in range(draw(st.integers(0, 3))):
        item = items[draw(st.integers(0, len(items) - 1))]
        where = draw(st.sampled_from(paths(item)[1:]))
        parent = item
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "duplicate", "correct"]))
        if action == "replace":
            parent[where[-1]] = draw(
                json_values
                | st.sampled_from(
                    ["", "Z", "2026-13-01", "NaN", "Infinity", "1e999", "x" * 600, None, []]
                )
            )
        elif action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "duplicate":
            items.append(copy.deepcopy(item))
        else:
            item[draw(st.sampled_from(["record", "amends"]))] = draw(
                st.sampled_from([item.get("source_id", "s"), "other", " bad id "])
            )
    return envelope(items)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_the_fast_path_accepts_exactly_what_the_careful_path_accepts(doc: dict[str, Any]) -> None:
    careful, problems = _validate_item_by_item(doc, None)
    fast = _validate_typed(doc, None)
    if fast is not None:
        assert careful == fast and not problems
    else:
        assert careful is None and problems  # never a needless detour
    assert validate_envelope(doc) == (careful, problems)


def test_every_adapters_output_takes_the_fast_path() -> None:
    assert len(KINDS) >= 9
    for start in range(0, len(CORPUS), 50):
        doc = envelope(CORPUS[start : start + 50])
        # The corpus has repeated source_ids across adapters' samples: only unique ones here.
        seen: set[str] = set()
        doc["events"] = [
            i for i in doc["events"] if not (i["source_id"] in seen or seen.add(i["source_id"]))
        ]
        records = [i.get("amends") or i.get("record") or i["source_id"] for i in doc["events"]]
        if len(set(records)) != len(records):
            continue
        assert _validate_typed(doc, None) is not None


def test_consent_scopes_naming_unknown_institutions_take_the_careful_path() -> None:
    items = [i for i in CORPUS if i["kind"] == "consent"][:1]
    items[0] = {**items[0], "payload": {**items[0]["payload"], "scope": ["nowhere"]}}
    doc = envelope(items)
    assert _validate_typed(doc, {"thc-1"}) is None
    valid, problems = validate_envelope(doc, institutions={"thc-1"})
    assert valid is None and [p.code for p in problems] == ["consent.scope_unknown"]
