"""Which submissions of a batch wait for earlier ones (exchange/ingest/order.py): those that act
on an earlier submission while a message before them in the submit stream is unanswered —
the consumer's acknowledgement floor below them, not counting the batch's own that are
answered with it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from exchange.ingest.checks import Checked
from exchange.ingest.order import candidates, sequence, waiting
from tests.factories import condition_item, resident
from tests.unit.services.fakes import pending

RID = resident(7)


def retract(source_id: str, record: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "kind": "retract",
        "payload": {"patient": {"resident_id": RID}, "record": record, "reason": "录入错误"},
    }


def delivered(seq: int, *items: dict[str, Any]) -> Checked:
    msg = SimpleNamespace(metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq)))
    return Checked(msg, "vc-a", f"s-{seq}", pending("vc-a", *items, submission_id=f"s-{seq}"))  # type: ignore[arg-type]


def record(seq: int) -> Checked:
    return delivered(seq, condition_item(RID, f"dx-{seq}"))


def correction(seq: int, of: int) -> Checked:
    return delivered(seq, retract(f"dx-{seq}-x", f"dx-{of}"))


def seqs(items: list[Checked]) -> list[int]:
    return [sequence(c.msg) for c in items]


def test_a_correction_with_everything_before_it_answered_goes_ahead() -> None:
    assert waiting([correction(11, of=10)], floor=10) == []
    # ... and one whose record is earlier in the same batch, answered with it.
    assert waiting([record(11), correction(12, of=11)], floor=10) == []


def test_a_correction_waits_while_a_message_before_it_is_elsewhere() -> None:
    # Message 11 is at another gateway (or given back): the correction at 12 waits.
    assert seqs(waiting([correction(12, of=11)], floor=10)) == [12]
    # A new record never waits: it stands alone.
    assert waiting([record(12)], floor=10) == []


def test_one_that_waits_holds_back_the_corrections_behind_it() -> None:
    batch = [record(11), correction(13, of=11), correction(14, of=11), record(15)]
    # 12 is elsewhere: 13 and 14 wait; 15 stands alone and goes.
    assert seqs(waiting(batch, floor=10)) == [13, 14]
    batch = [correction(12, of=9), correction(13, of=12)]
    # 11 elsewhere: 12 waits, and so does 13 behind it (12 is not answered with the batch).
    assert seqs(waiting(batch, floor=10)) == [12, 13]


def test_a_redelivery_of_one_answered_meanwhile_is_left_to_the_ledger() -> None:
    assert waiting([correction(9, of=8), correction(11, of=8)], floor=10) == []


def test_without_jetstream_order_nothing_waits() -> None:
    bare = Checked(SimpleNamespace(metadata=None), "vc-a", "s-0", correction(1, of=0).pending)  # type: ignore[arg-type]
    assert candidates([bare]) == [] and waiting([bare], floor=0) == []
