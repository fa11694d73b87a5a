"""The gateway: submissions off JetStream, checked, appended to the ledger, acknowledged.

For each fetched batch: check every message (sender, signature, envelope, items, time; see
``exchange.ingest.checks``); look up which are already in the ledger (a repeat gets its
original receipt); append the new ones in commits of at most ``batch_max_bytes``; keep the
final refusals; publish receipts (and dead letters for rejected ones) while keeping, for
submissions a clinic's edge node relayed, each institution's latest edge clock measurement
(one statement per batch); only then ack. A crash anywhere before the ack means redelivery,
and the ledger's uniqueness makes the redelivery append nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry

from adapters.envelope import load_public_key
from audit.writer import AuditWriter
from domain.freshness import IngestPolicy
from domain.problems import Problem
from exchange.ingest.answers import audit_record, receipt_of
from exchange.ingest.checks import (
    DEFAULT_INGEST,
    Checked,
    EnvelopeChecks,
    edge_clock_rows,
    rejection_rows,
)
from exchange.ingest.keys import Key
from exchange.ingest.ledger import Appended, IntegrityError, Ledger, Pending
from exchange.ingest.order import deliveries, overtaking, sequence, without
from exchange.ingest.summary import Summary
from exchange.servers.nats import (
    GATEWAY_CONSUMER,
    deadletter_subject,
    receipt_subject,
    stream_name,
)
from exchange.servers.outage import database_away
from exchange.telemetry.metrics import UNAUTHENTICATED, GatewayMetrics

log = logging.getLogger(__name__)

# A submission waiting for an earlier one of its institution (order.py): how often the stream is
# asked again, how long (briefly: a gateway holding fetches nothing), when it comes round again.
HOLD_POLL, HOLD_FOR, ORDER_WAIT = 0.02, 0.5, 0.25
# A message that fails alone this many times while the servers answer is set aside.
POISON_DELIVERIES = 3
# Saves of one submission alone that may lose the race for a patient's identity to another
# gateway, a short random pause apart, before it is given back to be delivered again.
CONTENDED_TRIES = 6


class Contended(Exception):
    """A submission the ledger refused only because other gateways kept moving the identities
    it names on: not a defect of the submission (never counted toward POISON_DELIVERIES)."""


async def _nak(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except Exception:  # the server redelivers after ack_wait anyway
        log.warning("could not nak a submission; it comes back after the ack wait")


class Gateway:
    def __init__(
        self,
        ledger: Ledger,
        nc: Client,
        consortium: str,
        *,
        executor: ThreadPoolExecutor,
        batch_max_bytes: int = 256_000,
        fetch_batch: int = 64,
        fetch_bytes: int = 4_000_000,
        audit: AuditWriter | None = None,
        retry_delay: float = 2.0,
        hold_for: float = HOLD_FOR,
        progress_every: float = 3.0,
        keys_pool: asyncpg.Pool | None = None,
        ingest_policy: IngestPolicy = DEFAULT_INGEST,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.audit = audit
        self.metrics = metrics or GatewayMetrics(CollectorRegistry())
        self.summary = Summary()
        self.ledger = ledger
        self.nc = nc
        self.js = nc.jetstream()
        self.consortium = consortium
        self.executor = executor
        self.batch_max_bytes = batch_max_bytes
        # At most fetch_batch submissions in hand at once, and about fetch_bytes of them:
        # memory stays bounded however many wait in the stream and however large they are
        # (a parsed and validated envelope takes ten times its bytes; the consumer's
        # max_ack_pending bounds what waits).
        self.fetch_batch = fetch_batch
        self.fetch_bytes = fetch_bytes
        self.retry_delay, self.hold_for = retry_delay, hold_for
        self.progress_every = progress_every  # well inside the consumer's ack wait (10 s)
        # Institution keys are cached while the checks LISTEN on keys_pool for rotations.
        self.checks = EnvelopeChecks(self._load_key, keys_pool, ingest_policy)
        self.accepted = 0
        self.rejected = 0

    async def _sync(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(
            GATEWAY_CONSUMER, stream=stream_name(self.consortium, "SUBMIT")
        )
        log.info("gateway consuming %s", stream_name(self.consortium, "SUBMIT"))
        done = asyncio.Event()  # the keys' listener stops with the gateway, however it stops
        keys = asyncio.create_task(self.checks.keys.run(done))
        try:
            await self._consume(sub, stop)
        finally:
            self.summary.tick(final=True)
            log.info("gateway no longer consuming %s", stream_name(self.consortium, "SUBMIT"))
            done.set()
            await sub.unsubscribe()
            # It gives its connection back to the pool on its way out (the pool cannot close
            # while one is held), even if this task is cancelled meanwhile.
            await asyncio.shield(keys)

    async def _consume(self, sub: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                msgs = await self._fetch(sub)
            except NatsError as exc:
                # The link is down or the cluster is electing the stream's leader: nothing
                # was taken, so nothing is lost; the pull is made again once it answers.
                log.warning("gateway could not fetch (%s); trying again", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if msgs:  # else nothing waiting: an empty batch, not a failure
                await self.handle(msgs)
            self.summary.tick()

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """One fetched batch, to its acks. While the gateway works on it, the server is told
        every few seconds that it does (an in-progress ack): a large batch on a busy ledger may
        take longer than the consumer's ack wait, and the server would otherwise deliver the
        same submissions to another gateway meanwhile. Only a gateway that stops working
        (a crash, a hang) lets its batch come back, and a batch the servers could not take
        (the database away) is given back at once, never answered."""
        heartbeat = asyncio.create_task(self._in_progress(msgs))
        started = time.perf_counter()
        try:
            await self._handle(msgs)
        finally:
            heartbeat.cancel()
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.summary.batch()

    async def _in_progress(self, msgs: Sequence[Msg]) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            for msg in msgs:
                if not msg.is_acked:  # neither acked nor given back (nak) meanwhile
                    with contextlib.suppress(Exception):  # the link is down: it comes back
                        await msg.in_progress()

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        try:
            await self.process(msgs)
        except (IntegrityError, Contended):
            # Another gateway saved one of the batch's identities or source records first
            # (expected with several gateways at once): each message alone sorts it out.
            log.warning(
                "gateway batch of %d met a concurrent save; trying its messages one by one",
                len(msgs),
            )
            await self._one_by_one(msgs)
        except Exception as exc:
            if database_away(exc):
                await self._give_back(msgs, exc)
                return
            log.exception("gateway batch of %d failed; trying its messages one by one", len(msgs))
            await self._one_by_one(msgs)

    async def _give_back(self, msgs: Sequence[Msg], exc: BaseException) -> None:
        """The servers are away (a failover, a restart): nothing of the batch was answered or
        acknowledged, so JetStream delivers it again, until they are back."""
        log.warning(
            "gateway: the database or broker is unavailable (%s); %d submission(s) wait for it",
            type(exc).__name__,
            len(msgs),
        )
        for msg in msgs:
            await _nak(msg, self.retry_delay)
        await asyncio.sleep(self.retry_delay / 2)

    async def _fetch(self, sub: Any) -> list[Msg]:
        """The next batch, as soon as there is one submission.

        nats-py's fetch(n), once a waiting pull has brought one message, waits for the other
        n - 1 until its timeout: an idle gateway would hold a lone submission back for up to
        that long. So: wait for one; then, if the stream says more are pending (or the first
        came again: others due again are not counted pending), take those, so that they are
        ordered among themselves in one batch rather than each alone (``order.waiting``).
        """
        try:
            first = await sub.fetch(1, timeout=0.5)
        except TimeoutError:
            return []
        meta = first[0].metadata
        pending = (meta.num_pending if meta.num_delivered <= 1 else self.fetch_batch) if meta else 0
        # As many more as fit the byte budget if they are the size of the first.
        room = self.fetch_bytes // max(1, len(first[0].data)) - 1
        wanted = min(self.fetch_batch - 1, pending, room)
        if wanted < 1:
            return list(first)
        try:
            more = await sub.fetch(wanted, timeout=0.05)
        except TimeoutError:  # another gateway took them first
            more = []
        return [*first, *more]

    async def _one_by_one(self, msgs: Sequence[Msg]) -> None:
        """After a failed batch: each message alone, so one poison message cannot hold the
        others back. If the servers are unwell, nothing is rejected: everything comes back
        later. If they are well and one message alone keeps failing, it is rejected (kept in
        the dead-letter stream, answered with a receipt) after POISON_DELIVERIES tries; one
        that only kept losing races for identities to other gateways is given back, however
        often (its data is fine: it is stored once a save wins)."""
        for i, msg in enumerate(msgs):
            try:
                await self.process([msg])
                continue
            except Contended:
                log.warning("gateway: a submission kept meeting concurrent saves; given back")
                await _nak(msg, self.retry_delay)
                continue
            except Exception as exc:
                if database_away(exc):
                    await self._give_back(msgs[i:], exc)
                    return
                log.exception("gateway failed on one submission")
            if not await self._healthy():
                for rest in msgs[i:]:
                    await _nak(rest, self.retry_delay)
                await asyncio.sleep(self.retry_delay / 2)
                return
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            if delivered < POISON_DELIVERIES:
                await _nak(msg, self.retry_delay)
                continue
            try:
                await self._reject_poison(msg, delivered)
            except Exception:
                log.exception("could not set a failing submission aside; it will come back")
                await _nak(msg, self.retry_delay)

    async def _healthy(self) -> bool:
        """Whether the ledger's database and the broker answer."""
        try:
            await asyncio.wait_for(self._sync(self.ledger.max_position), 10)
            await asyncio.wait_for(self.nc.flush(), 10)
        except Exception:
            return False
        return True

    async def _reject_poison(self, msg: Msg, delivered: int) -> None:
        item = Checked(msg, msg.subject.rsplit(".", 1)[-1], (msg.headers or {}).get("Nats-Msg-Id"))
        item.problems = [
            Problem(
                "gateway.internal_error",
                f"the exchange failed {delivered} times to process this "
                "submission while its servers were well; it is kept in the dead-letter stream for "
                "the exchange's operators, who have the details in their log. Nothing of it was "
                "stored",
            )
        ]
        if self.audit is not None:  # first: if the audit cannot record it, nothing is said
            record = audit_record(item, self.ledger.profile.hash_name)  # the audit log's hash
            await self.audit.append(record, datetime.now(UTC))
        await self._answer(item)
        await msg.ack_sync()

    async def process(self, msgs: Sequence[Msg]) -> list[Checked]:
        received_at = datetime.now(UTC)
        self.metrics.fetched(received_at, deliveries(msgs))
        # In the stream's order: a submission given back and delivered again takes its place
        # before those behind it in the same batch.
        msgs = sorted(msgs, key=sequence)
        checked = [await self.checks.check(msg, received_at) for msg in msgs]
        stream = stream_name(self.consortium, "SUBMIT")
        held = await overtaking(self.js, stream, checked)
        answered = await self._complete(without(checked, held), received_at)
        # Those that would overtake an earlier submission of their institution wait here
        # while the gateway holding it answers it, then are answered in order; given back
        # if that takes longer (handle's in-progress acks keep them this gateway's meanwhile).
        deadline = time.monotonic() + self.hold_for
        while held:
            if time.monotonic() > deadline:
                log.info("gateway: %d submission(s) given back to wait for earlier ones", len(held))
                for item in held:
                    await _nak(item.msg, ORDER_WAIT)
                break
            await asyncio.sleep(HOLD_POLL)
            still = await overtaking(self.js, stream, held)
            answered += await self._complete(without(held, still), received_at)
            held = still
        return answered

    async def _complete(self, checked: list[Checked], received_at: datetime) -> list[Checked]:
        """Checked submissions appended (those that pass), answered and acknowledged."""
        if not checked:
            return checked
        await self._append(checked)
        # A refusal of an authenticated submission is final: kept before it is answered, so
        # that no replay of the same id is accepted later, whatever the ledger holds by then.
        if final := [c for c in checked if c.authenticated and c.problems]:
            await self._sync(self.ledger.record_rejections, rejection_rows(final, received_at))
        # Receipts (and dead letters) published and the audit records committed, all at
        # once; only then the acks, confirmed by one round trip for the whole batch.
        answers: list[Awaitable[Any]] = [self._answer(item) for item in checked]
        # With them, the clinics' edge clocks as this batch found them, for /metrics and the
        # regulator whichever gateway process measured them: a measurement, not a decision,
        # so it need not be kept before the answers (its round trip overlaps theirs).
        if clocks := edge_clock_rows(checked, received_at):
            answers.append(self._sync(self.ledger.record_edge_clocks, clocks))
        if self.audit is not None:  # every submission, accepted or rejected, in the audit
            now, hash_name = datetime.now(UTC), self.ledger.profile.hash_name  # the log's
            answers += [self.audit.append(audit_record(c, hash_name), now) for c in checked]
        await asyncio.gather(*answers)
        for item in checked:
            await item.msg.ack()
        await self.nc.flush(timeout=10)  # the acks reached the server
        return checked

    # Checking ---------------------------------------------------------------------------------

    async def _load_key(self, code: str) -> Key | None:
        """The institution's registered key as the ledger holds it now."""
        institution = await self._sync(self.ledger.institution, code)
        if institution is None:
            return None
        return Key(load_public_key(institution.public_key), institution.version)

    # Appending ------------------------------------------------------------------------------

    async def _append(self, checked: list[Checked]) -> None:
        todo: dict[UUID, Checked] = {}
        twins: list[tuple[Checked, Checked]] = []  # the same submission twice in one fetch
        for item in checked:
            if item.pending is not None:
                if item.pending.key in todo:
                    twins.append((item, todo[item.pending.key]))
                else:
                    todo[item.pending.key] = item
        if not todo:
            return
        # What the ledger already holds is answered with its original position.
        for key, position in (await self._sync(self.ledger.positions_of, list(todo))).items():
            held = todo.pop(key)
            held.repeat, held.position = True, position
        for chunk in self._chunks(list(todo.values())):
            try:
                appended = await self._ledger_append([c.pending for c in chunk])
            except IntegrityError:
                await self._append_one_by_one(chunk)
                continue
            self._settle(chunk, appended)
        for twin, first in twins:
            twin.repeat, twin.position = True, first.position
            if first.pending is None:
                twin.pending, twin.problems = None, first.problems

    async def _ledger_append(self, pending: Sequence[Pending | None]) -> Appended:
        started = time.perf_counter()
        try:
            return await self._sync(self.ledger.append, pending)  # type: ignore[no-any-return]
        finally:
            self.metrics.append_seconds.observe(time.perf_counter() - started)

    @staticmethod
    def _settle(chunk: list[Checked], appended: Appended) -> None:
        for item in chunk:
            assert item.pending is not None
            if item.pending.key in appended.refused:
                item.problems = appended.refused[item.pending.key]
                item.pending = None
            else:
                item.position = appended.positions[item.pending.key]

    def _chunks(self, items: list[Checked]) -> list[list[Checked]]:
        chunks: list[list[Checked]] = [[]]
        size = 0
        for item in items:
            n = len(item.msg.data)
            if chunks[-1] and size + n > self.batch_max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += n
        return [c for c in chunks if c]

    async def _append_one_by_one(self, chunk: list[Checked]) -> None:
        """After a refused batch: find, submission by submission, what the ledger refuses."""
        for item in chunk:
            pending = item.pending
            assert pending is not None
            for attempt in range(CONTENDED_TRIES):
                if attempt:  # let the rival's save commit before this one reloads
                    await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
                try:
                    appended = await self._ledger_append([pending])
                    self._settle([item], appended)
                    break
                except IntegrityError:
                    pass
                held_at = (await self._sync(self.ledger.positions_of, [pending.key])).get(
                    pending.key
                )
                if held_at is not None:  # another gateway stored this very submission
                    item.repeat, item.position = True, held_at
                    break
                held = await self._sync(
                    self.ledger.held_source_records,
                    pending.valid.institution,
                    [i.source_id for i in pending.valid.items],
                )
                if held:
                    item.problems = [
                        Problem(
                            "item.source_id_held",
                            "the ledger already holds this source "
                            "record from an earlier submission; send a correction instead",
                            "source_id",
                            i.index,
                            i.source_id,
                        )
                        for i in pending.valid.items
                        if i.source_id in held
                    ]
                    item.pending = None
                    break
                # Neither held: another writer moved a patient identity on. The ledger's
                # identity cache was dropped with the failed save, so the next try reloads it.
            else:
                raise Contended("the ledger kept refusing a submission it does not hold")

    # Answering ------------------------------------------------------------------------------

    def _count(self, item: Checked, accepted: bool) -> None:
        """One answered submission, in the metrics and the log's summary."""
        institution = item.institution if item.authenticated else None
        kinds = (
            [i.kind for i in item.pending.valid.items]
            if accepted and not item.repeat and item.pending is not None
            else []
        )
        outcome = ("repeat" if item.repeat else "accepted") if accepted else "rejected"
        codes = [p.code for p in item.problems]
        self.metrics.answered(institution, outcome, kinds, codes)
        if item.stamp is not None and item.held is not None:  # relayed by a clinic's edge
            self.metrics.relayed(item.institution, item.skew, item.held)
        self.summary.answered(institution or UNAUTHENTICATED, outcome, len(kinds), codes)

    async def _answer(self, item: Checked) -> None:
        accepted = item.pending is not None and item.position is not None
        receipt = receipt_of(item, datetime.now(UTC))
        if accepted:
            self.accepted += not item.repeat
        else:
            self.rejected += 1
            await self.js.publish(
                deadletter_subject(self.consortium, item.institution),
                item.msg.data,
                headers={
                    "Hie-Problems": json.dumps(receipt["problems"], ensure_ascii=True),
                    "Hie-Submission-Id": str(item.submission_id),
                },
                timeout=10,
            )
        await self.js.publish(
            receipt_subject(self.consortium, item.institution),
            json.dumps(receipt, ensure_ascii=False).encode(),
            timeout=10,
        )
        self._count(item, accepted)
