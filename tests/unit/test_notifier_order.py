"""The notifier's two streams (referral steps, merge-request steps) go out in one ledger order,
and a page cut short in one never lets the other skip past what the first has not sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exchange.ingest import notifier as module
from exchange.ingest.notifier import Notifier


class Rows:
    def __init__(self, positions: list[int]) -> None:
        self.positions = positions

    async def __call__(self, start: int, limit: int) -> list[dict[str, Any]]:
        return [{"position": p, "institution": "a"} for p in self.positions if p > start][:limit]


def steps(referrals: list[int], merges: list[int], limit: int) -> list[int]:
    n = Notifier.__new__(Notifier)
    n.pool = None  # type: ignore[assignment]

    class Reader:
        events_after = Rows(referrals)

    n.reader = Reader()  # type: ignore[assignment]
    merge_rows = Rows(merges)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "steps_after", lambda pool, start, lim: merge_rows(start, lim))
        mp.setattr(module, "message", lambda row: {"p": row["position"]})
        mp.setattr(module, "recipients", lambda row: ["a"])
        mp.setattr(module, "merge_message", lambda row: {"p": row["position"]})
        return [p for p, _, _ in asyncio.run(n._next(0, limit))]


def test_both_streams_in_ledger_order() -> None:
    assert steps([2, 5, 9], [3, 4, 10], limit=10) == [2, 3, 4, 5, 9, 10]


def test_a_page_cut_short_stops_the_other_stream_at_its_end() -> None:
    # Referrals cut at 2 rows (positions 2, 5): merge steps past 5 wait for the next round.
    assert steps([2, 5, 9], [3, 7, 10], limit=2) == [2, 3, 5]
    # And the other way round.
    assert steps([8, 9], [1, 4, 6], limit=2) == [1, 4]
