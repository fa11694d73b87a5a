"""Which submissions of a batch wait for earlier ones (exchange/ingest/order.py): those that act
on an earlier submission while the submit stream (a work queue: what is answered is gone from
it) still holds a message of the same institution before them that the batch does not answer
with them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from exchange.ingest.checks import Checked
from exchange.ingest.order import candidates, sequence, waiting
from tests.factories import condition_item, resident
from tests.unit.services.fakes import pending

RID = resident(7)
EAST, WEST = "hie.c.submit.vc-east", "hie.c.submit.vc-west"


def retract(source_id: str, record: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "retract",
        "payload": {"patient": {"resident_id": RID}, "record": record, "reason": "录入错误"},
    }


def delivered(seq: int, subject: str, *items: dict[str, Any]) -> Checked:
    msg = SimpleNamespace(
        subject=subject, metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq))
    )
    code = subject.rsplit(".", 1)[-1]
    return Checked(msg, code, f"s-{seq}", pending(code, *items, submission_id=f"s-{seq}"))  # type: ignore[arg-type]


def record(seq: int, subject: str = EAST) -> Checked:
    return delivered(seq, subject, condition_item(RID, f"dx-{seq}"))


def correction(seq: int, of: int, subject: str = EAST) -> Checked:
    return delivered(seq, subject, retract(f"dx-{seq}-x", f"dx-{of}"))


class Stream:
    """What the submit stream still holds (sequence -> subject), and how often it was asked."""

    def __init__(self, held: dict[int, str]) -> None:
        self.held, self.asked = held, 0

    async def first_held(self, subject: str, seq: int) -> int | None:
        self.asked += 1
        return min(
            (s for s, subj in self.held.items() if subj == subject and s >= seq), default=None
        )


def batch_held(batch: list[Checked], others: dict[int, str] | None = None) -> Stream:
    """The stream holding the batch (unanswered until it is) and ``others``."""
    return Stream({sequence(c.msg): str(c.msg.subject) for c in batch} | (others or {}))


def waits(batch: list[Checked], stream: Stream) -> list[int]:
    found = asyncio.run(waiting(batch, stream.first_held))
    return [sequence(c.msg) for c in found]


def test_a_correction_with_nothing_of_its_own_before_it_goes_ahead() -> None:
    batch = [correction(11, of=10)]
    assert waits(batch, batch_held(batch)) == []
    # Its record earlier in the same batch, answered with it; the batch's run skipped at once.
    batch = [record(n) for n in range(1, 400)] + [correction(400, of=399)]
    stream = batch_held(batch)
    assert waits(batch, stream) == [] and stream.asked == 1


def test_a_correction_waits_while_one_of_its_institution_before_it_is_elsewhere() -> None:
    batch = [correction(12, of=11)]
    assert waits(batch, batch_held(batch, {11: EAST})) == [12]
    # Another institution's message before it holds nothing back ...
    assert waits(batch, batch_held(batch, {11: WEST})) == []
    # ... nor does a new record of its own wait: it stands alone.
    assert waits([record(12)], batch_held([record(12)], {11: EAST})) == []


def test_what_was_answered_out_of_order_no_longer_holds_anything_back() -> None:
    # 150 and 180 came round again; what lay between was answered meanwhile (gone).
    batch = [correction(150, of=1), correction(180, of=2), correction(220, of=3)]
    assert waits(batch, batch_held(batch)) == []


def test_one_that_waits_holds_back_those_of_its_institution_behind_it() -> None:
    batch = [record(11), correction(13, of=11), correction(14, of=11), record(15)]
    # 12 is elsewhere: 13 and 14 wait; 15 stands alone and goes.
    assert waits(batch, batch_held(batch, {12: EAST})) == [13, 14]
    mixed = [correction(13, of=1), correction(14, of=2, subject=WEST)]
    assert waits(mixed, batch_held(mixed, {12: EAST})) == [13]


def test_without_jetstream_order_nothing_waits() -> None:
    msg: Any = SimpleNamespace(metadata=None, subject=EAST)
    bare = Checked(msg, "vc-east", "s-0", correction(1, of=0).pending)
    assert candidates([bare]) == [] and waits([bare], Stream({})) == []
