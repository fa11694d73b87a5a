"""Envelope validation and signatures: every problem names the item, the field and the rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from adapters.envelope import (
    build_envelope,
    canonical_bytes,
    content_submission_id,
    jcs,
    load_public_key,
    loads,
    new_private_key,
    public_key_b64,
    verify_signature,
)
from domain.submission import validate_envelope
from tests.factories import (
    consent_item,
    json_values,
    observation_item,
    record_items,
    resident,
)

KEY = new_private_key()


def sign(items: list, institution: str = "thc-1") -> dict:
    return build_envelope(
        institution=institution, items=items, key=KEY, sent_at=datetime(2026, 11, 1, tzinfo=UTC)
    )


def test_a_good_envelope_validates_and_verifies() -> None:
    env = sign(record_items(resident(1), "a", consent=True))
    valid, problems = validate_envelope(env)
    assert problems == [] and valid is not None
    assert [i.kind for i in valid.items] == [
        "patient",
        "encounter",
        "condition",
        "observation",
        "consent",
    ]
    assert verify_signature(env, load_public_key(public_key_b64(KEY)))


def test_any_change_breaks_the_signature() -> None:
    env = sign([observation_item(resident(1), "o")])
    public = load_public_key(public_key_b64(KEY))
    env["events"][0]["payload"]["value_quantity"]["value"] = "149"
    assert not verify_signature(env, public)
    assert not verify_signature({**sign([]), "signature": "not base64!"}, public)


def test_canonical_bytes_ignore_key_order_and_the_signature() -> None:
    a = {"b": 1, "a": "中", "signature": "x"}
    assert canonical_bytes(a) == canonical_bytes({"a": "中", "b": 1}) == '{"a":"中","b":1}'.encode()


def test_submission_ids_come_from_content() -> None:
    items = record_items(resident(1), "a")
    assert content_submission_id("thc-1", items) == content_submission_id("thc-1", list(items))
    assert content_submission_id("thc-1", items) != content_submission_id("thc-2", items)


def test_problems_name_item_field_and_rule_without_values() -> None:
    bad = observation_item(resident(2), "o-1")
    bad["payload"]["value_string"] = "高"  # two values at once
    items = [
        observation_item("11010519491231002Y", "o-0"),
        bad,
        {"source_id": "o-2", "kind": "prescription", "payload": {}},
        observation_item(resident(3), "o-0"),  # repeats a source_id
        consent_item(resident(4), "c-1", scope=["nowhere"]),
    ]
    _, problems = validate_envelope(sign(items), institutions={"thc-1"})
    found = {(p.item, p.source_id, p.field, p.code) for p in problems}
    assert (0, "o-0", "payload.patient.resident_id", "resident_id.check_character") in found
    assert (1, "o-1", "payload", "observation.values") in found
    assert (2, "o-2", "kind", "literal_error") in found
    assert (3, "o-0", "source_id", "item.duplicate_source_id") in found
    assert (4, "c-1", "payload.scope", "consent.scope_unknown") in found
    assert all("11010519491231002Y" not in str(p) for p in problems)


def test_envelope_level_problems() -> None:
    _, problems = validate_envelope({"institution": "bad code!", "events": []})
    assert {p.field for p in problems} >= {
        "submission_id",
        "institution",
        "sent_at",
        "events",
        "signature",
    }
    assert validate_envelope([1, 2])[1][0].code == "envelope.not_object"


@given(json_values)
def test_any_json_is_answered_with_problems_not_a_crash(doc: object) -> None:
    valid, problems = validate_envelope(doc)
    assert valid is None and problems


# The fast canonical form against the reference implementation: the same bytes, or the same
# refusal, for any JSON value, numbers and characters of every awkward kind included.
awkward_text = st.text(
    st.characters(codec="utf-8")
    | st.sampled_from(
        [
            "\ud800",
            "\udfff",
            "\ue000",
            "\uffff",
            "\U0001f600",
            "\x00",
            "\x1f",
            "\x7f",
            "\u2028",
            '"',
            "\\",
            "/",
            "血",
        ]
    ),
    max_size=8,
)
awkward_numbers = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.sampled_from([1e21, 1e-7, -0.0, 0.1, 2**53, 2**53 + 1, 1e15, 123456789012345678])
)
awkward_json = st.recursive(
    st.none() | st.booleans() | awkward_numbers | awkward_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(awkward_text, inner, max_size=4),
    max_leaves=20,
)


def reference(value: object) -> bytes | type[BaseException]:
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # the reference's own refusal, compared by type
        return type(exc)


@given(awkward_json)
def test_fast_canonical_bytes_are_the_reference_bytes(value: object) -> None:
    expected = reference(value)
    if isinstance(expected, bytes):
        assert jcs(value) == expected
    else:
        with pytest.raises(expected):
            jcs(value)


def standard(text: str) -> str:
    """What the standard library reads from ``text`` (or the type of its refusal), exactly:
    repr tells 1 from 1.0 and -0.0 from 0.0."""
    try:
        return repr(json.loads(text))
    except Exception as exc:
        return repr(type(exc))


@given(awkward_json, st.booleans())
def test_fast_loads_reads_every_text_as_the_standard_library(value: object, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert repr(loads(text)) == standard(text)


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",
        "-9223372036854775809",
        "[18446744073709551616, 1]",
        "1e400",
        "NaN",
        '{"a": -Infinity}',
        '"\\ud800"',
        '{"a": 1, "a": 2}',
        "[" * 2000 + "]" * 2000,
    ],
)
def test_fast_loads_leaves_what_orjson_reads_otherwise_to_the_standard_library(
    text: str,
) -> None:
    try:
        got = repr(loads(text))
    except Exception as exc:
        got = repr(type(exc))
    assert got == standard(text)


def test_canonical_bytes_of_a_real_envelope_match_the_reference() -> None:
    envelope = sign(record_items(resident(3), "k"))
    body = {k: v for k, v in envelope.items() if k != "signature"}
    assert canonical_bytes(envelope) == rfc8785.dumps(body)
    assert b"\\u" not in canonical_bytes(envelope)  # Chinese text stays as UTF-8
