"""Old events after a model change, on the real ledger and PostgreSQL: an envelope accepted
under an older item schema projects through its upcaster, its signed bytes untouched; a ledger
event class bumped with the library's ``class_version`` reads its old stored events upcast.
The pretended model change is tests/upcasting_story.py's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.envelope import build_envelope, load_public_key, public_key_b64
from adapters.envelope import verify_signature as verify
from domain.submission import CURRENT_SCHEMA, EnvelopeSchema, Submission, validate_envelope
from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.ingest.ledger import Pending
from exchange.settings import Settings
from projections.postgres import PatientRecordProjection
from tests.factories import record_items, resident
from tests.integration.conftest import registered_sender
from tests.integration.test_projection import snapshot
from tests.upcasting_story import PAST_SCHEMA, PRESENT_SCHEMA, PRESENT_VERSIONS, v1_items


async def accept(rt: Runtime, env: dict[str, Any], schema: EnvelopeSchema) -> None:
    """Append an envelope as the exchange of ``schema``'s time accepted it."""
    valid, problems = validate_envelope(env, schema=schema)
    assert valid is not None, problems
    await rt.sync(
        rt.ledger.append, [Pending(valid, json.dumps(env, ensure_ascii=False), datetime.now(UTC))]
    )


async def project(rt: Runtime, schema: EnvelopeSchema) -> PatientRecordProjection:
    async def read(after: int, limit: int) -> list[tuple[int, Any]]:
        return await rt.sync(rt.ledger.read, after, limit)

    projection = PatientRecordProjection(rt.pool, read, fields=rt.fields, schema=schema)
    while await projection.catch_up_once():
        pass
    return projection


async def test_an_envelope_of_the_previous_shape_projects_after_the_model_change(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-u")

        # Years ago: a version-1 sender's observation, with no category, was accepted.
        old = build_envelope(
            institution="thc-u",
            key=key,
            sent_at=datetime.now(UTC),
            items=v1_items(resident(1), "old"),
        )
        await accept(rt, old, PAST_SCHEMA)

        # The model changed (category required); read with today's model alone, the old
        # envelope no longer validates, and the projection refuses rather than guess.
        async def read(after: int, limit: int) -> list[tuple[int, Any]]:
            return await rt.sync(rt.ledger.read, after, limit)

        unaware = PatientRecordProjection(rt.pool, read, fields=rt.fields, schema=CURRENT_SCHEMA)
        with pytest.raises(RuntimeError, match="no longer validates"):
            await unaware.catch_up_once()
        assert await unaware.position() == 0

        # Today: a version-2 sender states its version on the observation.
        new = build_envelope(
            institution="thc-u",
            key=key,
            sent_at=datetime.now(UTC),
            items=record_items(resident(2), "new"),
            versions=PRESENT_VERSIONS,
        )
        assert next(i for i in new["events"] if i["kind"] == "observation")["schema_version"] == 2
        await accept(rt, new, PRESENT_SCHEMA)

        # The projection of today upcasts the old envelope and applies both.
        projection = await project(rt, PRESENT_SCHEMA)
        assert await projection.position() == await rt.sync(rt.ledger.max_position)
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT source_id, resource FROM record_entries "
                "WHERE kind = 'observation' ORDER BY source_id"
            )
        assert [r["source_id"] for r in rows] == ["new-sbp", "old-sbp"]
        for row in rows:
            resource = orjson.loads(row["resource"])
            assert resource["category"][0]["coding"][0]["code"] == "vital-signs"
            assert {"system": "urn:county-hie:data-category", "code": "vital"} in resource["meta"][
                "security"
            ]

        # The ledger still holds the old envelope as it was signed, and it verifies.
        stored = [
            json.loads(e.envelope)
            for _, e in await rt.sync(rt.ledger.read, 0, 100)
            if isinstance(e, Submission.Accepted)
        ]
        assert stored[0] == old and "category" not in stored[0]["events"][3]["payload"]
        assert all(verify(doc, load_public_key(public_key_b64(key))) for doc in stored)

        # And a rebuild under today's schema gives the same rows.
        before = await snapshot(rt)
        await projection.rebuild()
        await project(rt, PRESENT_SCHEMA)
        assert await snapshot(rt) == before


async def test_a_ledger_event_class_bumped_with_class_version_reads_old_events_upcast(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        key = await registered_sender(rt, "thc-v")
        env = build_envelope(
            institution="thc-v",
            key=key,
            sent_at=datetime.now(UTC),
            items=record_items(resident(3), "a"),
        )
        await accept(rt, env, CURRENT_SCHEMA)  # stored as Submission.Accepted version 1

        # Pretend Submission.Accepted version 2 records the channel a submission came by,
        # and every version-1 event came over NATS: the library's mapper runs the upcast
        # on read, through this ledger's compression and cipher.
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["channel"] = "nats"

        monkeypatch.setattr(Submission.Accepted, "class_version", 2, raising=False)
        monkeypatch.setattr(
            Submission.Accepted, "upcast_v1_v2", staticmethod(upcast_v1_v2), raising=False
        )
        accepted = [
            e
            for _, e in await rt.sync(rt.ledger.read, 0, 100)
            if isinstance(e, Submission.Accepted)
        ]
        assert [getattr(e, "channel", None) for e in accepted] == ["nats"]
        assert json.loads(accepted[0].envelope) == env

        # Without the bump, the same stored event reads as it was written.
        monkeypatch.undo()
        accepted = [
            e
            for _, e in await rt.sync(rt.ledger.read, 0, 100)
            if isinstance(e, Submission.Accepted)
        ]
        assert not hasattr(accepted[0], "channel")
