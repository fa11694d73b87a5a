"""What a gateway says in its log: a summary every ``every`` seconds in which it answered
anything — submissions accepted, repeated and rejected, items stored, rejections by reason
code and by institution — rather than a line per submission (thousands a second at load).
It names institutions and codes only: never a submission's content or its ids."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger("exchange.ingest.gateway")


class Summary:
    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._reset()

    def _reset(self) -> None:
        self._start = time.monotonic()
        self._outcomes: Counter[str] = Counter()
        self._items = 0
        self._batches = 0
        self._reasons: Counter[str] = Counter()
        self._rejected_from: Counter[str] = Counter()

    def batch(self) -> None:
        self._batches += 1

    def answered(self, institution: str, outcome: str, items: int, problems: Iterable[str]) -> None:
        """``institution``: the sender's code once authenticated, else "unauthenticated"."""
        self._outcomes[outcome] += 1
        self._items += items
        if outcome == "rejected":
            self._rejected_from[institution] += 1
            self._reasons.update(set(problems))

    def tick(self, *, final: bool = False) -> None:
        """Log the summary if its period is over (or ``final``) and anything happened."""
        now = time.monotonic()
        if not final and now - self._start < self.every:
            return
        if self._outcomes:
            log.info(
                "gateway answered %d submission(s) in %d batch(es) over %.1f s: %d accepted "
                "(%d items), %d already held, %d rejected",
                sum(self._outcomes.values()),
                self._batches,
                now - self._start,
                self._outcomes["accepted"],
                self._items,
                self._outcomes["repeat"],
                self._outcomes["rejected"],
                extra={
                    "accepted": self._outcomes["accepted"],
                    "repeats": self._outcomes["repeat"],
                    "rejected": self._outcomes["rejected"],
                    "items": self._items,
                    "rejected_by_reason": dict(self._reasons),
                    "rejected_by_institution": dict(self._rejected_from),
                },
            )
        self._reset()
