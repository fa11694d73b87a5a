"""The exchange's pooled connections plan their statements again at least once a minute.

A connection keeps a prepared statement's generic plan until a table it reads is next
analyzed: the read pool forces generic plans from the first execution
(exchange/bootstrap.py), the others take one after five. A plan made while the tables were
small (the first hours of a county, a history loaded in bulk, a restore) reads them whole,
and keeps doing so as they grow, until autovacuum comes round to analyze each one: on a busy
database that is hours, and every call pays for the county's size meanwhile. So, as a
connection goes back to its pool, its plans are dropped (``DISCARD PLANS``) once they are
``REPLAN_SECONDS`` old; its next use plans again for the tables as they now are (the planner
reads a table's current size, whatever its statistics say). A few plannings a minute per
connection; asyncpg's prepared statements stay, only their plans go.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

import asyncpg

REPLAN_SECONDS = 60.0


class Replanning:
    """A pool's ``reset``. ``session``: also undo what a user of the connection may have left
    (LISTEN, SET, advisory locks, cursors: asyncpg's own reset query), in the same round trip.
    Without it (the read pool: no LISTEN, no SET) nothing else is undone, and a connection goes
    back with no round trip at all but the minute's ``DISCARD PLANS``."""

    def __init__(self, *, session: bool = False) -> None:
        self.session = session
        self._planned: WeakKeyDictionary[asyncpg.Connection, float] = WeakKeyDictionary()

    async def __call__(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        since = self._planned.setdefault(conn, now)
        statements = [conn.get_reset_query()] if self.session else []
        if now - since >= REPLAN_SECONDS:
            self._planned[conn] = now
            statements.append("DISCARD PLANS;")
        query = "\n".join(filter(None, statements))
        if query:
            await conn.execute(query)
