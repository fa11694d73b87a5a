"""The gateway's cache of institution keys: served only while it listens for rotations, and
never filled with a key read while a rotation was being announced."""

from __future__ import annotations

import asyncio

from adapters.envelope import new_private_key
from exchange.ingest.keys import InstitutionKeys, Key

OLD, NEW = (Key(new_private_key().public_key(), v) for v in (1, 2))


class Ledger:
    def __init__(self) -> None:
        self.key = OLD
        self.reads = 0
        self.during_read: object = None  # called while a read is under way

    async def load(self, code: str) -> Key | None:
        self.reads += 1
        key = self.key if code == "thc" else None
        if callable(self.during_read):
            self.during_read()
        await asyncio.sleep(0)
        return key


def listening(keys: InstitutionKeys) -> None:
    keys._listening = lambda: True  # type: ignore[method-assign]


async def test_not_listening_every_lookup_reads_the_ledger() -> None:
    ledger = Ledger()
    keys = InstitutionKeys(ledger.load)  # no pool: it cannot hear of rotations
    assert await keys.get("thc") == OLD
    ledger.key = NEW
    assert await keys.get("thc") == NEW and ledger.reads == 2
    assert await keys.get("nobody") is None


async def test_listening_it_caches_until_a_rotation_is_announced() -> None:
    ledger = Ledger()
    keys = InstitutionKeys(ledger.load)
    listening(keys)
    assert await keys.get("thc") == OLD
    assert await keys.get("thc") == OLD and ledger.reads == 1
    ledger.key = NEW
    assert await keys.get("thc") == OLD  # not announced yet
    assert await keys.get("thc", fresh=True) == NEW  # the ledger's own answer
    keys.forget("conn", 1, "hie_institution_keys", "thc")  # the NOTIFY
    assert await keys.get("thc") == NEW


async def test_a_key_read_while_a_rotation_is_announced_is_not_kept() -> None:
    ledger = Ledger()
    keys = InstitutionKeys(ledger.load)
    listening(keys)
    ledger.during_read = keys.forget  # the read may have seen the key before the rotation
    assert await keys.get("thc") == OLD
    ledger.during_read = None
    ledger.key = NEW
    assert await keys.get("thc") == NEW and ledger.reads == 2  # read again, not cached


def test_a_refusal_for_a_rotated_key_alone_is_not_kept_for_good() -> None:
    from datetime import UTC, datetime

    from domain.problems import Problem
    from exchange.ingest.checks import Checked, rejection_rows
    from exchange.ingest.ledger import KEY_ROTATED

    def checked(sid: str, *codes: Problem) -> Checked:
        return Checked(None, "thc", sid, problems=list(codes), authenticated=True)  # type: ignore[arg-type]

    stale = Problem("envelope.sent_at_stale", "old", "sent_at")
    rows = rejection_rows(
        [checked("a", KEY_ROTATED), checked("b", stale), checked("c", KEY_ROTATED, stale)],
        datetime(2026, 12, 5, tzinfo=UTC),
    )
    assert [(r[2], r[4]) for r in rows] == [
        ("b", ["envelope.sent_at_stale"]),
        ("c", ["envelope.sent_at_stale", "signature.key_rotated"]),
    ]
