"""The referral scheduler: expires open referrals past their deadline and flags overdue
follow-ups, as ledger events.

Its deadlines are read from the referral view, which the ledger alone determines, so a
restarted scheduler finds every timer again (and records a missed one as soon as it starts).
The aggregate checks again that a step is still due when it is taken: an institution acting
at the same moment wins or loses cleanly on the ledger's optimistic concurrency, and the loser
is simply looked at again on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from exchange.ingest.ledger import Ledger
from projections.referral_reader import ReferralReader

log = logging.getLogger(__name__)


class ReferralScheduler:
    def __init__(
        self,
        ledger: Ledger,
        reader: ReferralReader,
        executor: ThreadPoolExecutor,
        *,
        interval: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.reader = reader
        self.executor = executor
        self.interval = interval  # the longest sleep; an earlier deadline wakes it sooner
        self.clock = clock
        self.recorded: list[tuple[Any, str]] = []

    async def tick(self) -> int:
        """Record every step that is due now; return how many were recorded."""
        now = self.clock()
        done = 0
        loop = asyncio.get_running_loop()
        for rid in await self.reader.due(now):
            try:
                step = await loop.run_in_executor(
                    self.executor, self.ledger.referral_timer, rid, now
                )
            except Exception:  # a concurrent step, or the database away: next round
                log.warning(
                    "referral timer step failed; it is tried again next round", exc_info=True
                )
                continue
            if step is not None:
                done += 1
                self.recorded.append((rid, step))
                del self.recorded[:-1000]
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                done = await self.tick()
                upcoming = await self.reader.next_deadline()
            except Exception:
                log.exception("referral scheduler round failed; trying again")
                done, upcoming = 0, None
            wait = self.interval
            if upcoming is not None:
                until = (upcoming - self.clock()).total_seconds()
                # A deadline already past that recorded nothing: the view has not caught up
                # with the ledger (or the step lost a race). Wait a round, do not spin.
                if until > 0 or done:
                    wait = min(wait, max(0.05, until + 0.01))
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
