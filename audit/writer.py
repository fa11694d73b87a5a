"""Group commit for the audit log: many concurrent reads, one transaction per flush.

Each caller awaits its own record's durable commit; while one flush is committing, the next
records queue up and go together in the following one, so hundreds of reads per second never
wait behind one another's WAL flush.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from audit.postgres import AuditStore, AuditWriteError

log = logging.getLogger(__name__)
MAX_BATCH = 500
# Flushes on their way at once. The store computes an append only on a committed tree (see
# AuditStore.append_many), so a second flush would only wait there, with fewer records.
IN_FLIGHT = 1


class AuditWriter:
    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[dict[str, Any], datetime, asyncio.Future[int]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def append(self, record: dict[str, Any], recorded_at: datetime) -> int:
        """Append one record durably; raises AuditWriteError if it could not be committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, recorded_at, done))
        return await done

    async def _run(self) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        while True:
            batch = [await self._queue.get()]
            await slots.acquire()
            # What arrived while the flushes before were committing goes along.
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            flush = asyncio.get_running_loop().create_task(self._flush(batch, slots))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    async def _flush(
        self,
        batch: list[tuple[dict[str, Any], datetime, asyncio.Future[int]]],
        slots: asyncio.Semaphore,
    ) -> None:
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
