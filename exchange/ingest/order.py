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
waits, given back, while a message of the same institution before it in the stream is not yet
answered — delivered to another gateway, given back to come round again, or given back by this
batch (``waiting``). The submit stream is a work queue: a message answered (acknowledged) is
gone from it, so what is unanswered is what the stream still holds, less this batch's own
answered with it. The stream is asked for the institution's first message at or after a
sequence (one small request, skipping each run of the batch's own at once); another
institution's messages never hold a submission back (what it depends on is its own: another
institution acts on what it has seen, which was stored first). One with nothing unanswered
before it goes ahead, and is refused as ever if what it acts on never came.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

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


FirstHeld = Callable[[str, int], Awaitable[int | None]]


async def overtaking(
    js: JetStreamContext, stream: str, checked: Sequence[Checked]
) -> list[Checked]:
    """The batch's submissions that would overtake an earlier one of their institution
    (``waiting``), by what the submit ``stream`` still holds: a question to the server only
    for a batch holding a submission that acts on an earlier one. If it cannot be asked, they
    wait (given back, they come round again)."""

    async def first_held(subject: str, seq: int) -> int | None:
        try:
            found = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return None
        return int(found.seq or 0)

    try:
        return await waiting(checked, first_held)
    except (NatsError, TimeoutError):
        return candidates(checked)


async def waiting(checked: Sequence[Checked], first_held: FirstHeld) -> list[Checked]:
    """Of a batch in stream order, the submissions that act on an earlier one while a message
    of the same institution before them is unanswered. ``first_held(subject, seq)`` is the
    sequence of the first message the submit stream still holds on ``subject`` at or after
    ``seq`` (None: none). The batch's others before a submission count as answered with it,
    but those that wait themselves."""
    acting = candidates(checked)
    if not acting:
        return []
    answered: set[int] = set()  # sequences of this batch answered with it, so far
    clear: dict[str, int] = {}  # per subject: nothing unanswered before this sequence
    blocked: set[str] = set()  # subjects with a submission of this batch waiting
    found: list[Checked] = []
    for item in checked:
        seq, subject = sequence(item.msg), str(item.msg.subject)
        if any(item is c for c in acting):
            if subject in blocked or await _unanswered_before(
                subject, seq, clear.get(subject, 1), answered, first_held
            ):
                found.append(item)
                blocked.add(subject)
                continue
            clear[subject] = seq
        answered.add(seq)
    return found


async def _unanswered_before(
    subject: str, seq: int, start: int, answered: set[int], first_held: FirstHeld
) -> bool:
    """Whether the stream holds a message on ``subject`` before ``seq`` (from ``start``)
    that is not among the batch's ``answered``."""
    at = start
    while at < seq:
        held = await first_held(subject, at)
        if held is None or held >= seq:
            return False
        if held not in answered:
            return True
        while held + 1 in answered:  # the batch's own run: no other message is in it
            held += 1
        at = held + 1
    return False


def without(items: Sequence[Checked], gone: Sequence[Checked]) -> list[Checked]:
    """``items`` but those in ``gone`` (the same objects)."""
    return [c for c in items if not any(c is g for g in gone)]
