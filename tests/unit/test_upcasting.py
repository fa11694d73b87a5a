"""Schema versions and upcasting: an envelope of an older shape reads as today's models expect,
its signed bytes untouched; today's envelopes are the bytes they always were; dispatch tables
name every kind. The pretended model change is tests/upcasting_story.py's."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest

from adapters.envelope import build_envelope, load_public_key, new_private_key, public_key_b64
from adapters.envelope import verify_signature as verify
from cryptoprofile import INTL
from domain.clinical import ENTRY_KINDS, KINDS, PAYLOAD_MODELS
from domain.identity import PatientIdentity
from domain.institution import Institution
from domain.submission import CURRENT_SCHEMA, EnvelopeSchema, Submission, validate_envelope
from domain.upcasting import CURRENT, ITEM_VERSIONS, Upcasting
from projections.batch import Changes
from projections.fields import FieldCipher
from projections.record import EVENT_HANDLERS, ITEM_HANDLERS, RecordApplier
from projections.render import RENDERERS, RESOURCE_TYPES
from tests.factories import observation_item, record_items, resident
from tests.upcasting_story import (
    PAST_SCHEMA,
    PRESENT_SCHEMA,
    PRESENT_VERSIONS,
    observation_v1_v2,
    v1_items,
)

FIELDS = FieldCipher(b"unit-test-projection-key-32bytes", INTL)

KEY = new_private_key()
PUBLIC = load_public_key(public_key_b64(KEY))
SENT = datetime(2026, 11, 1, tzinfo=UTC)


def sign(items: list[Any], **extra: Any) -> dict[str, Any]:
    return build_envelope(institution="thc-1", items=items, key=KEY, sent_at=SENT, **extra)


def observation_of(doc: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in doc["events"] if i["kind"] == "observation")


# The pure upcaster ----------------------------------------------------------------------------


def test_an_old_observation_is_upcast_and_validates_under_todays_model() -> None:
    # An envelope a version-1 sender signed: its observation has no category.
    old = sign(v1_items(resident(1), "a"))
    kept = copy.deepcopy(old)
    assert "category" not in observation_of(old)["payload"]

    # Today's model, read without the upcaster, refuses it: the field is required now.
    valid, problems = validate_envelope(
        old,
        schema=EnvelopeSchema(
            upcasting=Upcasting(
                items=PRESENT_VERSIONS, item_upcasters={("observation", 1): lambda item: item}
            )
        ),
    )
    assert valid is None and [p.field for p in problems] == ["payload.category"]

    # Read with the upcaster, it is today's shape, the category inferred from the code.
    valid, problems = validate_envelope(old, schema=PRESENT_SCHEMA)
    assert problems == [] and valid is not None
    observation = next(i for i in valid.items if i.kind == "observation")
    assert observation.payload.category == "vital-signs"  # type: ignore[attr-defined]

    # The stored document itself is untouched, so its signature still verifies.
    assert old == kept and verify(old, PUBLIC)


def test_the_upcaster_is_pure_and_infers_no_category_it_cannot_know() -> None:
    item = v1_items(resident(2), "b")[3]
    item["payload"]["code"] = {"system": "http://loinc.org", "code": "2345-7"}  # glucose
    before = copy.deepcopy(item)
    assert observation_v1_v2(item)["payload"]["category"] is None
    assert item == before


def test_upcasting_changes_only_the_items_that_need_it() -> None:
    doc = sign(v1_items(resident(3), "c"))
    upcast, problems = PRESENT_SCHEMA.upcasting.upcast(doc)
    assert problems == []
    changed = [
        i
        for i, (a, b) in enumerate(zip(doc["events"], upcast["events"], strict=True))
        if a is not b
    ]
    assert changed == [3]  # the observation, now stamped with the version it was brought to
    assert upcast["events"][3]["schema_version"] == 2


def test_todays_envelopes_are_the_bytes_they_were_and_cost_no_copy() -> None:
    env = sign(record_items(resident(4), "d", consent=True))
    assert "schema_version" not in env
    assert all("schema_version" not in item for item in env["events"])
    assert CURRENT.upcast(env) == (env, []) and CURRENT.upcast(env)[0] is env


def test_the_builder_writes_versions_above_one_and_they_verify() -> None:
    env = sign(record_items(resident(5), "e"), versions=PRESENT_VERSIONS)
    assert [i.get("schema_version") for i in env["events"]] == [None, None, None, 2]
    assert verify(env, PUBLIC)
    valid, problems = validate_envelope(env, schema=PRESENT_SCHEMA)
    assert valid is not None and problems == []


def test_a_version_newer_than_the_exchange_is_refused_by_item() -> None:
    item = {**observation_item(resident(6), "f-sbp"), "schema_version": 2}
    valid, problems = validate_envelope(sign([item]))
    assert valid is None
    assert [(p.code, p.item, p.source_id, p.field) for p in problems] == [
        ("schema_version.unknown", 0, "f-sbp", "schema_version")
    ]
    # One stating today's version is as good as one stating none.
    ok = {**observation_item(resident(6), "f-sbp"), "schema_version": 1}
    assert validate_envelope(sign([ok]))[0] is not None


@pytest.mark.parametrize("version", ["2", 0, -1, 1.0, True, None])
def test_a_malformed_item_version_is_refused_not_raised(version: Any) -> None:
    item = {**observation_item(resident(7), "g-sbp"), "schema_version": version}
    valid, problems = validate_envelope(sign([item]))
    assert valid is None and problems
    assert all(p.item == 0 for p in problems)


def test_an_envelope_of_an_older_version_is_upcast_too() -> None:
    # Pretend envelope version 1 allowed a sent_at without an offset (county time), and
    # version 2 requires one: its upcaster says which zone a bare time meant.
    def v1_v2(doc: dict[str, Any]) -> dict[str, Any]:
        sent = doc["sent_at"]
        return {**doc, "sent_at": sent if "+" in sent[10:] else sent + "+08:00"}

    schema = EnvelopeSchema(upcasting=Upcasting(envelope=2, envelope_upcasters={1: v1_v2}))
    old = {**sign(record_items(resident(8), "h")), "sent_at": "2026-11-01T09:00:00"}
    assert validate_envelope(old)[0] is None  # today's model needs the offset
    valid, problems = validate_envelope(old, schema=schema)
    assert problems == [] and valid is not None
    assert valid.sent_at.utcoffset() is not None and valid.sent_at.hour == 9
    newer = {**old, "schema_version": 3}
    assert [p.code for p in validate_envelope(newer, schema=schema)[1]] == [
        "schema_version.unknown"
    ]


def test_a_chain_with_a_gap_is_refused_when_it_is_built() -> None:
    with pytest.raises(ValueError, match="observation v1"):
        Upcasting(items=PRESENT_VERSIONS)
    with pytest.raises(ValueError, match="envelope v1"):
        Upcasting(envelope=2)
    with pytest.raises(ValueError, match="kinds without"):
        EnvelopeSchema(models={k: m for k, m in PAYLOAD_MODELS.items() if k != "seal"})


# Dispatch tables ------------------------------------------------------------------------------


def test_every_kind_has_a_version_a_model_and_a_projection_handler() -> None:
    assert set(ITEM_VERSIONS) == set(KINDS) == set(PAYLOAD_MODELS) == set(ITEM_HANDLERS)
    assert set(RENDERERS) == set(RESOURCE_TYPES) == {*ENTRY_KINDS, "consent"}
    assert set(CURRENT_SCHEMA.models) == set(KINDS)


def test_projection_dispatch_is_by_event_class() -> None:
    assert Submission.Accepted in EVENT_HANDLERS
    assert Institution.Registered in EVENT_HANDLERS
    assert PatientIdentity.Merged in EVENT_HANDLERS
    assert all(isinstance(cls, type) for cls in EVENT_HANDLERS)


async def test_the_projection_applies_an_old_envelope_through_the_upcaster() -> None:
    # The stored event: a version-1 envelope accepted under the past schema, kept verbatim.
    env = sign(v1_items(resident(9), "i"))
    assert validate_envelope(env, schema=PAST_SCHEMA)[0] is not None
    text = json.dumps(env, ensure_ascii=False)
    patient = str(uuid4())
    accepted = Submission(
        institution="thc-1",
        submission_id=env["submission_id"],
        envelope=text,
        patient_ids=[patient] * len(env["events"]),
        received_at=SENT,
    ).collect_events()[0]
    registered = Institution(
        "thc-1", "测试卫生院", "township_health_centre", public_key_b64(KEY)
    ).collect_events()[0]

    async def no_lookup(code: str) -> str | None:
        raise AssertionError("the name came with the registration")

    # Today's schema without the upcaster cannot read it; with it, the row is today's.
    with pytest.raises(RuntimeError, match="no longer validates"):
        await RecordApplier(no_lookup, FIELDS).apply(Changes(), 2, accepted)
    applier, changes = RecordApplier(no_lookup, FIELDS, PRESENT_SCHEMA), Changes()
    await applier.apply(changes, 1, registered)
    await applier.apply(changes, 2, accepted)
    rows = {row[5]: row for row in changes.entries.values()}
    assert set(rows) == {"encounter", "condition", "observation"}
    resource = orjson.loads(rows["observation"][7])
    assert resource["category"][0]["coding"][0]["code"] == "vital-signs"
    assert {"system": "urn:county-hie:data-category", "code": "vital"} in resource["meta"][
        "security"
    ]
    assert [at for _, at in changes.clock] == [registered.timestamp, accepted.timestamp]


@pytest.mark.parametrize("item", [5, "schema_version", None, ["schema_version"]])
def test_an_item_that_is_no_object_is_refused_not_raised(item: Any) -> None:
    doc = {**sign(record_items(resident(10), "j")), "signature": "c2ln"}
    doc["events"] = [*doc["events"], item]
    valid, problems = validate_envelope(doc)
    assert valid is None and problems and all(p.item == 4 for p in problems)
