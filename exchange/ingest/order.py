"""The order an institution's submissions are applied in: the order it made them, even when
they reach the gateways out of it.

Several gateways take batches off one JetStream consumer at once, and a submission given back
(a contended save, the database away) comes round again after those behind it; a clinic's edge
node empties days of queue in one burst. Most submissions stand alone (a new record, a new
consent), but one that acts on what an earlier submission may bring — a correction, a
withdrawal, a merge, a referral's next step (``domain.services.submissions.follows_earlier``)
— must not be applied before it: a correction that overtook its record would be refused for
good (``correction.unknown_record``), and two corrections of one record applied the wrong way
round would leave the older standing.

So each batch is taken in the submit stream's order (``sequence``), and such a submission
waits, given back, while a message before it in the stream is not yet answered — delivered to
another gateway, given back to come round again, or given back by this batch (``waiting``).
The gateways' consumer's acknowledgement floor says what is answered: every message up to it.
One with nothing unanswered before it goes ahead, and is refused as ever if what it acts on
never came.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from nats.aio.msg import Msg

from domain.services.submissions import follows_earlier
from exchange.ingest.checks import Checked


def sequence(msg: Msg) -> int:
    """A delivered message's sequence in the submit stream (0: not a JetStream delivery)."""
    try:
        meta = msg.metadata
    except Exception:
        return 0
    return int(meta.sequence.stream) if meta is not None and meta.sequence else 0


def deliveries(msgs: Sequence[Msg]) -> Iterator[tuple[datetime, int]]:
    """Each message's time of publication into JetStream and its delivery count."""
    for msg in msgs:
        try:
            meta = msg.metadata
        except Exception:  # not a JetStream message: nothing to time
            continue
        if meta is not None:
            yield meta.timestamp, meta.num_delivered


def candidates(checked: Sequence[Checked]) -> list[Checked]:
    """The batch's checked submissions that act on an earlier one (none when the batch's
    messages are not JetStream deliveries, which have no order to keep)."""
    if any(sequence(c.msg) == 0 for c in checked):
        return []
    return [c for c in checked if c.pending is not None and follows_earlier(c.pending.valid)]


def waiting(checked: Sequence[Checked], floor: int) -> list[Checked]:
    """Of a batch in stream order, the submissions that act on an earlier one while a message
    before them is unanswered, given the consumer's acknowledgement ``floor`` (every message
    up to it answered); the batch's others before them count as answered with it, but those
    that wait themselves."""
    acting = candidates(checked)
    found: list[Checked] = []
    answered_here = 0  # messages of this batch after the floor, answered with it
    for item in checked:
        seq = sequence(item.msg)
        if seq <= floor:
            continue  # a redelivery of one answered meanwhile: the ledger knows it
        if any(item is c for c in acting) and seq - 1 - floor - answered_here > 0:
            found.append(item)
        else:
            answered_here += 1
    return found
