"""The submit client: publish signed envelopes to the exchange and wait for their receipts.

A JetStream ack alone is not durability (DESIGN.md): a submission counts as delivered only
when its receipt arrives, and the receipt follows the ledger commit. Receipts are read from
the exchange's receipts stream: through the institution's own durable consumer where the
exchange made one (its NATS user manages none), acknowledged once the caller has them all;
else through a consumer of the call's own starting a little before its first publish, so a
receipt published for an earlier send of the same id is found as well. Unanswered
submissions are resent with the same id, which broker de-duplication and the ledger make safe.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from adapters.envelope import encode
from adapters.receipts import Following, receipt_from
from domain.errors import AdapterError

# A publish is tried again (same id) for this long: through a cluster's leader election.
PUBLISH_PATIENCE = 60.0
# Following the receipts is tried this often, a second apart, each try waiting up to 5 s:
# longer than a cluster takes to elect a stream's leader.
FOLLOW_ATTEMPTS = 10
MAX_SUBMISSION_BYTES = 1024 * 1024  # the exchange's stream setting
# The header a submission sent through a village clinic's edge node carries: when the edge
# took it, on the clinic's clock (an ISO 8601 instant with its offset). The exchange counts a
# submission's age from it and compares it with its own clock (issue 16; DESIGN.md).
EDGE_RECEIVED = "Hie-Edge-Received"
# What the clinic's sender measured of its clock against the exchange's, from the receipts its
# edge keeps (seconds, negative when behind; ``edge_clock_offset``): sent with each submission
# through the edge, so that the exchange can flag a slow clinic clock too.
EDGE_CLOCK_OFFSET = "Hie-Edge-Clock-Offset"
# The edge's streams a clinic's sender uses: its queue of submissions for the exchange, and
# its copy of the exchange's receipts for the clinic (exchange/servers/edge.py makes them).
EDGE_SUBMIT, EDGE_RECEIPTS = "EDGE_SUBMIT", "EDGE_RECEIPTS"
# The edge's copy of the exchange's notifications for the clinic, and the clinic's own durable
# consumer of it (``hie notifications`` on the clinic's machine reads through it).
EDGE_NOTIFY, EDGE_NOTIFY_CONSUMER = "EDGE_NOTIFY", "clinic"
EDGE_ACK_PATIENCE = 10.0  # seconds: the edge is on the clinic's own machine


def edge_subject(consortium: str, institution: str) -> str:
    """Where a clinic publishes its submissions on its own edge node."""
    return f"hie.{consortium}.edge.{institution}"


class SubmitError(AdapterError):
    code = "submit.failed"


class SubmitClient:
    def __init__(self, nc: Client, consortium: str, institution: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.consortium = consortium
        self.institution = institution

    @property
    def subject(self) -> str:
        return f"hie.{self.consortium}.submit.{self.institution}"

    async def submit(
        self,
        envelopes: Sequence[dict[str, Any]],
        *,
        wait: float = 30.0,
        attempts: int = 3,
        on_receipt: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Send each envelope and return its receipt, keyed by submission id.

        Raises SubmitError naming how many submissions got no receipt after every attempt.
        """
        by_id = {e["submission_id"]: e for e in envelopes}
        receipts: dict[str, dict[str, Any]] = {}
        if not by_id:
            return receipts
        arrived = asyncio.Event()

        def take(receipt: dict[str, Any]) -> bool:
            """Keep a receipt this call waits for; False: someone else's."""
            sid = receipt.get("submission_id")
            if not isinstance(sid, str) or sid not in by_id:
                return False
            if sid not in receipts:
                receipts[sid] = receipt
                if on_receipt:
                    on_receipt(receipt)
                if len(receipts) == len(by_id):
                    arrived.set()
            return True

        sub = await self._follow_receipts(take)
        try:
            for _ in range(attempts):
                for sid, envelope in by_id.items():
                    if sid not in receipts:
                        await self._publish(envelope)
                try:
                    await asyncio.wait_for(arrived.wait(), wait)
                    break
                except TimeoutError:
                    if sub.task is None:
                        # An ordered consumer that a cluster fault broke stays broken: the
                        # client library recreates it once, by sequence with the start time
                        # still set, which the server refuses (10094). Follow afresh; ``take``
                        # keeps each receipt once.
                        await sub.close()
                        sub = await self._follow_receipts(take)
        finally:
            await sub.close()
        missing = len(by_id) - len(receipts)
        if missing:
            raise SubmitError(
                f"{missing} of {len(by_id)} submission(s) got no receipt after {attempts} "
                f"attempt(s); run the same command again — nothing will be stored twice"
            )
        return receipts

    async def _follow_receipts(self, take: Callable[[dict[str, Any]], bool]) -> Following:
        """Receipts as they arrive, each handed to ``take``. Through the institution's own
        durable consumer when the exchange made one (its NATS user may manage none; see the
        exchange's NATS accounts), else through a consumer of this call's own that starts
        far enough back to find a receipt for an earlier send of the same id."""
        stream = f"HIE_{self.consortium.upper().replace('-', '_')}_RECEIPTS"
        durable = f"receipts-{self.institution}"
        for attempt in range(FOLLOW_ATTEMPTS):
            try:
                try:
                    await self.js.consumer_info(stream, durable, timeout=5)
                except NotFoundError:
                    return await Following.ordered(self.js, self.consortium, self.institution, take)
                return await Following.durable(self.js, stream, durable, take)
            except (TimeoutError, NatsError):
                # A cluster electing a new leader for the stream answers nothing for seconds;
                # a refusal of these credentials answers nothing either, but says so apart.
                self._raise_if_refused()
                if attempt == FOLLOW_ATTEMPTS - 1:
                    raise SubmitError(
                        "the exchange's receipts could not be followed: check the NATS URL, "
                        "and that these credentials are the institution's own"
                    ) from None
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    def _raise_if_refused(self) -> None:
        """A permission violation reaches the connection, not the request that caused it
        (DESIGN.md's traps): name it rather than wait on."""
        err = self.nc.last_error
        if err is not None and "permissions violation" in str(err).lower():
            raise SubmitError(
                f"the exchange's NATS refused these credentials: {err} — use the "
                "institution's own credentials file (from `hie institution add`)"
            )

    async def _publish(self, envelope: dict[str, Any]) -> None:
        body = _encoded(envelope)
        headers = {"Nats-Msg-Id": envelope["submission_id"]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_PATIENCE
        while True:
            try:
                # Bounded: a publish answered with an error can leave its future pending.
                await asyncio.wait_for(
                    self.js.publish(self.subject, body, headers=headers, timeout=5),
                    10,
                )
                return
            except (TimeoutError, NatsError):
                self._raise_if_refused()
                if loop.time() > deadline:
                    break
                await asyncio.sleep(0.5)  # same id again: de-duplication makes this safe
        raise SubmitError(
            "the exchange did not acknowledge a publish: check the NATS URL and that this "
            "institution's NATS user may publish to its own submit subject"
        )


class EdgeSubmitClient:
    """Submissions through the clinic's own edge node (issue 16): each is published to the
    edge, whose acknowledgement means the clinic's machine has stored it (with an fsync), and
    the edge forwards it whenever its link to the exchange is up. Each carries the edge's stamp
    (``EDGE_RECEIVED``), on this machine's clock. Receipts are read back from the edge's copy
    of them, which it keeps: a receipt that came down while no sender ran is found later.

    An acknowledgement by the edge is not delivery: only a receipt is (DESIGN.md). Nothing here
    sends an id twice; the caller keeps the ids queued and their stamps (``hie submit``'s
    journal) and never re-signs them under new ids.
    """

    def __init__(self, nc: Client, consortium: str, institution: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.consortium = consortium
        self.institution = institution
        self.clock_offset: float | None = None  # ``measure_clock``'s, sent with each

    async def measure_clock(self) -> float | None:
        """This machine's clock against the exchange's, from the receipts the edge holds
        (``edge_clock_offset``); sent with each submission from now on."""
        self.clock_offset = await edge_clock_offset(self.js)
        return self.clock_offset

    async def queue(self, envelope: dict[str, Any]) -> str:
        """Keep ``envelope`` at the edge; returns the edge's stamp (when it took it)."""
        body = _encoded(envelope)
        stamp = datetime.now(UTC).astimezone().isoformat()
        headers = {"Nats-Msg-Id": envelope["submission_id"], EDGE_RECEIVED: stamp}
        if self.clock_offset is not None:
            headers[EDGE_CLOCK_OFFSET] = f"{self.clock_offset:.3f}"
        try:
            ack = await asyncio.wait_for(
                self.js.publish(
                    edge_subject(self.consortium, self.institution),
                    body,
                    headers=headers,
                    timeout=EDGE_ACK_PATIENCE,
                ),
                EDGE_ACK_PATIENCE * 2,
            )
        except (TimeoutError, NatsError) as exc:
            raise SubmitError(
                f"the clinic's edge node did not keep a submission ({exc or 'no answer'}): check "
                "that `hie edge up` runs and `hie edge status`",
                code="submit.edge_unavailable",
            ) from None
        if ack.stream != EDGE_SUBMIT:
            raise SubmitError(
                f"the edge node stored the submission in {ack.stream}, not its queue "
                f"{EDGE_SUBMIT}: this edge was not made by `hie edge up` for {self.institution}",
                code="submit.edge_unavailable",
            )
        return stamp

    async def follow(self, since: datetime, take: Callable[[dict[str, Any]], object]) -> Following:
        """Every receipt the edge holds from ``since`` (on this machine's clock) on, and each
        that comes down later, handed to ``take`` until the subscription is closed; the
        subscription's ``seen`` is the edge stream's sequence of the last one handed."""
        following: Following | None = None

        async def on_msg(msg: Any) -> None:
            receipt = receipt_from(msg.data)
            if receipt is not None:
                take(receipt)
            if following is not None:
                following.seen = msg.metadata.sequence.stream

        sub = await self.js.subscribe(
            f"hie.{self.consortium}.receipt.{self.institution}",
            cb=on_msg,
            stream=EDGE_RECEIPTS,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            config=ConsumerConfig(opt_start_time=since.astimezone(UTC)),
        )
        following = Following(sub)
        return following

    async def held_since(self, since: datetime) -> int:
        """The edge stream's sequence of the last receipt it holds stored at ``since`` or
        later (0: none): what ``follow(since, ...)`` will have handed over once caught up."""
        state = (await self.js.stream_info(EDGE_RECEIPTS)).state
        if not state.messages:
            return 0
        last = await self.js.get_msg(EDGE_RECEIPTS, seq=state.last_seq)
        stored = stored_at(last.time)
        return state.last_seq if stored is None or stored >= since else 0


async def edge_clock_offset(js: JetStreamContext, last: int = 20) -> float | None:
    """What the edge's copies of the exchange's receipts say of this machine's clock against
    the exchange's, in seconds (negative: behind); None before any receipt came down.

    Each receipt says when the exchange wrote it (``received_at``, its clock), and the edge
    stored it when it came down (this machine's clock), never before it was written: the
    difference is the offset plus the time it took to come down. The least over the ``last``
    receipts is thus an upper bound of the offset, close to it once one came down promptly
    (the exchange takes a lower bound from each submission's stamp; domain/freshness.py)."""
    state = (await js.stream_info(EDGE_RECEIPTS)).state
    best: float | None = None
    for seq in range(state.last_seq, max(state.first_seq, state.last_seq - last + 1) - 1, -1):
        if not seq:
            break
        try:
            msg = await js.get_msg(EDGE_RECEIPTS, seq=seq)
        except NotFoundError:
            continue
        receipt = receipt_from(msg.data or b"") or {}
        written = stored_at(receipt.get("received_at"))
        stored = stored_at(msg.time)
        if written is not None and stored is not None and written.tzinfo is not None:
            difference = (stored - written).total_seconds()
            best = difference if best is None else min(best, difference)
    return best


def stored_at(value: Any) -> datetime | None:
    """A stored message's time as the server gives it (RFC 3339 with nanoseconds)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python reads at most six digits of a second's fraction
        whole, _, rest = text.partition(".")
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]  # the fraction's alone
        text = f"{whole}.{digits[:6]}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _encoded(envelope: dict[str, Any]) -> bytes:
    """The envelope as it is sent; SubmitError if it is over the exchange's message limit."""
    body = encode(envelope)
    if len(body) > MAX_SUBMISSION_BYTES:
        raise SubmitError(
            f"a submission of {len(body)} bytes is over the {MAX_SUBMISSION_BYTES}-byte limit: "
            "send its items in several submissions"
        )
    return body


class NotificationClient:
    """An institution's notifications (``hie.<c>.notify.<i>``), through its durable consumer.

    The exchange keeps the consumer ``notify-<i>``: what arrived while the institution was
    offline waits there, in ledger order, until it is fetched and acknowledged.
    """

    def __init__(self, nc: Client, consortium: str, institution: str) -> None:
        self.js = nc.jetstream()
        self.stream = f"HIE_{consortium.upper().replace('-', '_')}_NOTIFY"
        self.durable = f"notify-{institution}"
        self._sub: Any = None

    @classmethod
    def at_edge(cls, nc: Client, consortium: str, institution: str) -> NotificationClient:
        """The clinic's notifications as its edge node keeps them (``nc`` connected to the
        edge): what came down while the link was up, read whether or not it is up now."""
        client = cls(nc, consortium, institution)
        client.stream, client.durable = EDGE_NOTIFY, EDGE_NOTIFY_CONSUMER
        return client

    async def waiting(self, timeout: float = 2.0) -> int | None:
        """How many notifications wait, not yet delivered (the consumer's pending count): 0
        when the consumer does not exist yet (nothing was ever sent here), None when the
        server did not say (a caller that must know fetches)."""
        try:
            info = await self.js.consumer_info(self.stream, self.durable, timeout=timeout)
        except NotFoundError:
            return 0
        except NatsError:
            return None
        return int(info.num_pending or 0)

    async def fetch(
        self,
        batch: int = 100,
        timeout: float = 1.0,
        handle: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The next notifications (at most ``batch``); an empty list when none is waiting
        (or none was ever sent to this institution). Each is acknowledged only after
        ``handle`` (if given) returned for it: one that raises comes back later."""
        if self._sub is None:
            try:
                self._sub = await self.js.pull_subscribe_bind(self.durable, stream=self.stream)
            except NatsError:
                return []
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except TimeoutError:
            return []
        except NatsError:  # the consumer does not exist yet: nothing was ever sent here
            await self.close()
            await asyncio.sleep(min(timeout, 0.5))
            return []
        out = []
        for msg in msgs:
            try:
                note = json.loads(msg.data)
            except ValueError:
                await msg.ack()  # not a notification: acknowledged so it blocks nothing
                continue
            if handle is not None:
                try:
                    result = handle(note)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    await msg.nak(delay=5)
                    raise
            out.append(note)
            await msg.ack()
        return out

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
