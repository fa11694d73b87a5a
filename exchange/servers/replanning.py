"""The read pool's connections plan their statements again at least once a minute.

The read pool forces generic plans (exchange/bootstrap.py): each connection plans a statement
once and keeps that plan until a table it reads is next analyzed. A plan made while the tables
were small (the first hours of a county, a history loaded in bulk, a restore) reads them whole,
and keeps doing so as they grow, until autovacuum comes round to analyze each one: on a busy
database that is hours, and every read pays for the county's size meanwhile. So, as a
connection goes back to the pool, its plans are dropped (``DISCARD PLANS``) once they are
``REPLAN_SECONDS`` old; its next use plans again for the tables as they now are (the planner
reads a table's current size, whatever its statistics say). A round trip and a few plannings
a minute per connection.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

import asyncpg

REPLAN_SECONDS = 60.0


class Replanning:
    """The read pool's ``reset``: read connections keep no session state (no LISTEN, no SET),
    so nothing else is undone as one goes back (asyncpg's own reset is a round trip per use)."""

    def __init__(self) -> None:
        self._planned: WeakKeyDictionary[asyncpg.Connection, float] = WeakKeyDictionary()

    async def __call__(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        since = self._planned.setdefault(conn, now)
        if now - since >= REPLAN_SECONDS:
            self._planned[conn] = now
            await conn.execute("DISCARD PLANS")
