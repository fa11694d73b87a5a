"""Read-model fields under each crypto profile when a replay runs in worker processes: the
profile reaches the workers by name, and what they seal is what the runner's own process seals,
token for token (a rebuilt read model is row for row the same)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from cryptoprofile import by_name, public_key_b64
from domain.submission import validate_envelope
from exchange.ingest.ledger import Ledger, Pending, open_replay_source
from projections.batch import Changes
from projections.fields import PREFIXES, FieldCipher
from projections.parallel import Preparers, Replay
from projections.record import RecordApplier
from tests.factories import record_items, resident
from tests.integration.conftest import PROFILES

pytestmark = pytest.mark.integration

INSTITUTION = "thc-f"
TOKEN = re.compile(rb"[vg]1\.[A-Za-z0-9_-]+={0,2}")


def filled_ledger(database_url: str, cipher_key: str, pseudonym: bytes, profile: str) -> int:
    """A ledger of one institution and three residents' visits; its head position."""
    key = by_name(profile).new_private_key()
    ledger = Ledger(database_url, cipher_key, pseudonym, crypto_profile=profile)
    try:
        ledger.register_institution(
            INSTITUTION, "测试卫生院", "township_health_centre", public_key_b64(key)
        )
        for n in range(3):
            env = build(key, record_items(resident(n), f"v{n}"))
            valid, problems = validate_envelope(env)
            assert valid and not problems
            appended = ledger.append([Pending(valid, json.dumps(env), datetime.now(UTC))])
            assert not appended.refused
        return int(ledger.max_position())
    finally:
        ledger.close()


def build(key: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    from adapters.envelope import build_envelope

    return build_envelope(institution=INSTITUTION, key=key, sent_at=datetime.now(UTC), items=items)


def sealed_in(changes: Changes) -> list[bytes]:
    """Every sealed token among a batch's rows (inserts, statements and COPY bytes)."""
    text = repr((changes.inserts, changes.ops)).encode() + b"".join(c[2] for c in changes.copies)
    return TOKEN.findall(text)


@pytest.mark.parametrize("crypto_profile", PROFILES)
async def test_workers_seal_with_the_profile_as_the_runner_does(
    database_url: str, crypto_profile: str
) -> None:
    cipher_key = base64.b64encode(secrets.token_bytes(32)).decode()
    pseudonym, projection_key = secrets.token_bytes(32), secrets.token_bytes(32)
    head = await asyncio.to_thread(
        filled_ledger, database_url, cipher_key, pseudonym, crypto_profile
    )

    async def at_head() -> int:
        return head

    replay = Replay(
        partial(open_replay_source, database_url, cipher_key, pseudonym, crypto_profile),
        projection_key,
        at_head,
        crypto_profile=crypto_profile,
        processes=1,
    )
    with Preparers(replay) as workers:
        prepared = await workers.prepare(0, head, 10_000)
    assert prepared.reached == head

    # The same events applied here, with this process's field cipher.
    fields = FieldCipher(projection_key, by_name(crypto_profile))
    ledger = await asyncio.to_thread(
        Ledger, database_url, cipher_key, pseudonym, crypto_profile=crypto_profile
    )
    try:
        events = await asyncio.to_thread(ledger.read_range, 0, head, 10_000)

        async def name(code: str) -> str | None:
            return await asyncio.to_thread(ledger.institution_name, code)

        applier, here = RecordApplier(name, fields), Changes()
        for position, event in events:
            await applier.apply(here, position, event)
        here.encode_rows()
    finally:
        ledger.close()

    tokens = sealed_in(prepared.changes)
    assert tokens and tokens == sealed_in(here)
    assert prepared.changes.inserts == here.inserts and prepared.changes.ops == here.ops
    prefix = PREFIXES[crypto_profile].encode()
    assert all(t.startswith(prefix) for t in tokens)
    opened = set()
    for token in tokens:
        for column in ("patient_identifiers.value", "patients.demographics"):
            try:
                opened.add(fields.open(token.decode(), column))
            except Exception:
                continue
    assert {resident(n) for n in range(3)} <= opened
    other = FieldCipher(projection_key, by_name({"intl": "gm", "gm": "intl"}[crypto_profile]))
    with pytest.raises(ValueError, match="crypto profile"):
        other.open(tokens[0].decode(), "patient_identifiers.value")
