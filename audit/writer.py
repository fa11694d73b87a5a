"""Group commit for the audit log: many concurrent reads, one transaction per flush.

Each caller awaits its own record's durable commit; while a flush is committing, the next
records gather and go together in the following one, so hundreds of reads per second never
wait behind one another's WAL flush. Two flushes are on their way at once: the store computes
the second on the tree the first will leave and sends it while the first commits.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from audit.postgres import AuditStore, AuditWriteError

log = logging.getLogger(__name__)
MAX_BATCH = 500
# Flushes on their way at once. The store sends an append computed on the one before it while
# that one commits (AuditStore.append_many), so the database writes one flush while the next
# is being computed and sent. A second flush goes only once SHARED_FROM records wait (until
# then they wait for the first, as one flush: at the read API's rates a second transaction
# for a few records cost PostgreSQL more than it saved), and what waits is shared between
# the two: measured in bench/audit.py with 64 concurrent writers, flushes of 32 two at a
# time beat flushes of 64 one at a time, and a third flush or flushes of 16 lost to their
# overhead.
IN_FLIGHT = 2
SHARED_FROM = 32

_Waiting = tuple[dict[str, Any], datetime, "asyncio.Future[int]"]


class AuditWriter:
    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._changed = asyncio.Event()  # a record arrived or a flush ended
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def append(self, record: dict[str, Any], recorded_at: datetime) -> int:
        """Append one record durably; raises AuditWriteError if it could not be committed."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        done: asyncio.Future[int] = loop.create_future()
        self._waiting.append((record, recorded_at, done))
        self._arrived.set()
        self._changed.set()
        return await done

    async def _run(self) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            await slots.acquire()
            while self._flushes and len(self._waiting) < SHARED_FROM:  # a second flush waits
                self._changed.clear()
                await self._changed.wait()
            # What arrived while the flushes before were committing goes along.
            size = min(MAX_BATCH, max(SHARED_FROM, -(-len(self._waiting) // IN_FLIGHT)))
            batch, self._waiting = self._waiting[:size], self._waiting[size:]
            if not self._waiting:
                self._arrived.clear()
            flush = loop.create_task(self._flush(batch, slots))
            self._flushes.add(flush)
            flush.add_done_callback(self._ended)

    def _ended(self, flush: asyncio.Task[None]) -> None:
        self._flushes.discard(flush)
        self._changed.set()

    async def _flush(self, batch: list[_Waiting], slots: asyncio.Semaphore) -> None:
        try:
            seqs = await self.store.append_many([(r, at) for r, at, _ in batch])
        except Exception as exc:  # every waiter learns its record was not written
            failure = (
                exc
                if isinstance(exc, AuditWriteError)
                else AuditWriteError("the audit record could not be written")
            )
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(failure)
            return
        finally:
            slots.release()
        for (_, _, fut), seq in zip(batch, seqs, strict=True):
            if not fut.done():
                fut.set_result(seq)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for flush in list(self._flushes):
            flush.cancel()
            try:
                await flush
            except (asyncio.CancelledError, Exception):
                pass
