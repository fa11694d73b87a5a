"""The runner that follows the ledger and keeps the shared patient record in PostgreSQL.

Each batch of ledger events is applied in ONE transaction together with the projection's
tracked position (locked FOR UPDATE), so a restart, or a second runner, never applies an
event twice. Every entry row keeps the ledger position at which it became current
(``valid_from``) and, later, stopped being current (``valid_to``), for "as it stood then".
What each event writes is projections/record.py's; the tables are projections/tables.py's.
A rebuild empties the tables; the runner ANALYZEs them when its replay has caught up with the
ledger (their statistics are those of the emptied tables until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from domain.submission import CURRENT_SCHEMA, EnvelopeSchema
from projections.batch import Changes
from projections.fields import FieldCipher
from projections.parallel import Prepared, Preparers, Replay
from projections.record import RecordApplier
from projections.tables import LEDGER_CHANNEL, NAME, TABLES, ReadLedger

log = logging.getLogger(__name__)


class PatientRecordProjection:
    """Follows the ledger and keeps the shared patient record current."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        read: ReadLedger,
        *,
        fields: FieldCipher,
        batch: int = 500,
        items: int = 20_000,
        schema: EnvelopeSchema = CURRENT_SCHEMA,
        on_applied: Callable[[Sequence[tuple[int, Any]]], None] | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.pool = pool
        # Far behind the ledger, batches are prepared in worker processes (projections/
        # parallel.py); None: always in this process.
        self.replay = replay
        # Told each batch of events once its transaction committed (the exchange times
        # submissions from the gateway to here with it); it must be quick and never raise.
        self.on_applied = on_applied
        self.read = read
        self.batch = batch  # ledger events per batch at most
        self.items = items  # and about this many items: a batch's rows are held in memory
        self._limit = batch  # the next read's size, from the items per event lately
        self._advanced = asyncio.Condition()
        self._applier = RecordApplier(self._institution_name, fields, schema)
        self._analyze = False  # once caught up: a rebuild's replay filled the tables

    async def position(self) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT position FROM projection_position WHERE name = $1", NAME
            )
        )

    async def catch_up_once(self) -> int:
        """Apply the next batch of ledger events; return how many were applied."""
        start = await self.position()
        events = await self.read(start, self._limit)
        if not events:
            await self._caught_up()
            return 0
        changes = await self._prepare(events)
        return len(events) if await self._write(start, events[-1][0], changes, events) else 0

    async def _prepare(self, events: Sequence[tuple[int, Any]]) -> Changes:
        """A batch's rows, worked out before any transaction opens."""
        changes = Changes()
        apply = self._applier.apply
        items = 0
        for position, event in events:
            await apply(changes, position, event)
            items += len(getattr(event, "patient_ids", ()))
        # Envelopes hold 1 to 1000 items: size the next read so a batch holds about
        # ``self.items`` of them (memory stays bounded, the write stays one transaction).
        per_event = max(1.0, items / len(events))
        self._limit = max(1, min(self.batch, int(self.items / per_event)))
        return changes

    async def _institution_name(self, code: str) -> str | None:
        found = await self.pool.fetchval("SELECT name FROM institutions WHERE code = $1", code)
        return found if isinstance(found, str) else None

    async def _write(
        self, start: int, end: int, changes: Changes, events: Sequence[tuple[int, Any]]
    ) -> bool:
        """Write a batch prepared from ``start`` and move the position to ``end``, in one
        transaction; False (nothing written) if the position is no longer ``start``.
        ``events``: what ``on_applied`` is told of (the events, or their ``Mark``s)."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME
            )
            if current != start:
                return False  # another runner moved on meanwhile; read again from there
            # Read models need not wait for a synchronous standby: lost with a primary, they
            # are lost with the position they were at (one commit), and replayed from there.
            await conn.execute("SET LOCAL synchronous_commit = local")
            await changes.flush(conn)
            await conn.execute(
                "UPDATE projection_position SET position = $2 WHERE name = $1", NAME, end
            )
        if self.on_applied is not None and events:
            self.on_applied(events)
        async with self._advanced:
            self._advanced.notify_all()
        return True

    async def run(self, stop: asyncio.Event, idle: float = 0.05) -> None:
        """Follow the ledger until ``stop``; any failure restarts from the tracked position."""
        appended = asyncio.Event()

        def wake(*_: Any) -> None:
            appended.set()

        listener: asyncpg.Connection | None = None
        log.info("projection %s following the ledger", NAME)
        try:
            while not stop.is_set():
                if not _alive(listener):
                    # Its connection lost (the database restarted, or failed over to its
                    # standby): LISTEN again on a new one. Polling follows meanwhile.
                    await self._unlisten(listener, wake)
                    listener = await self._listen(wake)
                try:
                    await self._follow(stop, appended, idle, listener)
                except Exception:
                    log.exception(
                        "projection %s failed; restarting from its tracked position", NAME
                    )
                    await asyncio.sleep(1.0)
        finally:
            await self._unlisten(listener, wake)

    async def _unlisten(
        self, listener: asyncpg.Connection | None, wake: Callable[..., None]
    ) -> None:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.remove_listener(LEDGER_CHANNEL, wake)
            with contextlib.suppress(Exception):
                await self.pool.release(listener)

    async def _follow(
        self,
        stop: asyncio.Event,
        appended: asyncio.Event,
        idle: float,
        listener: asyncpg.Connection | None = None,
    ) -> None:
        """Catch up in a pipeline: the next batch is read and prepared while the last one is
        being written (PostgreSQL works while Python does). Returns when a rival runner moved
        the position, or the LISTEN connection was lost, so the caller starts again from the
        tracked one."""
        start = await self.position()
        if start == 0:  # rebuilt (here or by `hie projections rebuild`), or a new database
            self._analyze = True
        if self.replay is not None:
            replayed = await self._replay_behind(start, stop)
            if replayed is None:
                return
            start = replayed
        writing: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set() and (listener is None or _alive(listener)):
                appended.clear()  # a commit during this round wakes the next one at once
                events = await self.read(start, self._limit)
                if not events:
                    if writing is not None:
                        done, writing = await writing, None
                        if not done:
                            return
                        continue
                    await self._caught_up()
                    await first_set(stop, appended, timeout=idle)
                    if not appended.is_set() and await self.position() != start:
                        return  # rebuilt (or moved by a rival) while idle: start from there
                    continue
                changes = await self._prepare(events)
                if writing is not None and not await writing:
                    return
                writing = asyncio.create_task(self._write(start, events[-1][0], changes, events))
                start = events[-1][0]
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                with contextlib.suppress(Exception):
                    await writing

    async def _replay_behind(self, start: int, stop: asyncio.Event) -> int | None:
        """While more than ``replay.behind`` positions behind the ledger's head, replay in
        ranges prepared by worker processes, written here in order. The position reached;
        None if a rival runner moved it (the caller starts again from the tracked one)."""
        assert self.replay is not None
        head = await self.replay.head()
        if head - start <= self.replay.behind or stop.is_set():
            return start
        log.info(
            "projection %s: %d ledger positions behind; replaying in %d processes",
            NAME,
            head - start,
            self.replay.processes,
        )
        self._analyze = True  # what the replay fills is analyzed once caught up
        # Smaller ranges than a batch here: several wait to be written at once. A range spans
        # as many positions as hold ``items`` if every event held as many as the fullest met
        # so far: a ledger's items lie unevenly (a gateway's batch appends its identity events,
        # then its submissions), and a range that ends early stalls the pipeline.
        span, items, most = self.batch, max(1, self.items // 4), 1
        with Preparers(self.replay) as workers:
            while head - start > self.replay.behind and not stop.is_set():
                pending: deque[tuple[int, int, asyncio.Future[Prepared]]] = deque()
                handed = start
                while (pending or handed < head) and not stop.is_set():
                    while len(pending) < self.replay.ahead and handed < head:
                        end = min(head, handed + span)
                        pending.append((handed, end, workers.prepare(handed, end, items)))
                        handed = end
                    after, end, future = pending.popleft()
                    prepared = await future
                    reached = prepared.reached
                    if not await self._write(after, reached, prepared.changes, prepared.marks):
                        for *_, waiting in pending:
                            waiting.cancel()
                        return None
                    if reached < end:  # the range held more items than asked: the rest next
                        pending.appendleft((reached, end, workers.prepare(reached, end, items)))
                    start = reached
                    most = max(most, prepared.most)
                    span = max(1, min(self.batch, items // most))
                for *_, waiting in pending:  # stopped: what was handed out is not written
                    waiting.cancel()
                head = await self.replay.head()
        log.info("projection %s: replayed in processes up to position %d", NAME, start)
        return start

    async def _listen(self, wake: Callable[..., None]) -> asyncpg.Connection | None:
        try:
            conn = await self.pool.acquire()
        except Exception:  # polling alone still follows the ledger
            log.warning("projection %s cannot LISTEN; polling only", NAME)
            return None
        try:
            await conn.add_listener(LEDGER_CHANNEL, wake)
            return conn
        except Exception:
            await self._unlisten(conn, wake)
            log.warning("projection %s cannot LISTEN; polling only", NAME)
            return None

    async def wait_for(self, position: int, timeout: float = 30.0) -> None:
        """Wait until the projection has applied the ledger up to ``position``."""

        async def reached() -> None:
            while await self.position() < position:
                async with self._advanced:
                    try:
                        await asyncio.wait_for(self._advanced.wait(), 0.1)
                    except TimeoutError:
                        pass

        await asyncio.wait_for(reached(), timeout)

    async def rebuild(self) -> None:
        """Forget every row and the position; the runner then replays the whole ledger."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT position FROM projection_position WHERE name = $1 FOR UPDATE", NAME
            )
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
            await conn.execute("UPDATE projection_position SET position = 0 WHERE name = $1", NAME)
        self._analyze = True

    async def _caught_up(self) -> None:
        """At the ledger's head after a rebuild: ANALYZE what its replay filled, once
        (autovacuum would, later; until then the planner sees the emptied tables)."""
        if not self._analyze:
            return
        await self.pool.execute(f"ANALYZE {', '.join(TABLES)}")
        log.info("projection %s: rebuilt and analyzed", NAME)
        self._analyze = False


def _alive(listener: asyncpg.Connection | None) -> bool:
    try:
        return listener is not None and not listener.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back when its connection was lost
        return False


async def first_set(*events: asyncio.Event, timeout: float) -> None:
    """Wait until any of the events is set, or the timeout passes."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
