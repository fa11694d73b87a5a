"""LISTEN on a PostgreSQL channel through one connection held from an asyncpg pool, as the
token revocations and the gateways' institution keys do: started, checked, and stopped so
that the connection goes back to the pool whatever became of it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import asyncpg


class Listener:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: str,
        on_notify: Callable[..., None],
        on_lost: Callable[..., None] | None = None,
    ) -> None:
        self.pool = pool
        self.channel = channel
        self.on_notify = on_notify
        self.on_lost = on_lost or on_notify
        self._conn: asyncpg.Connection | None = None

    def active(self) -> bool:
        try:
            return self._conn is not None and not self._conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took it back when its connection was lost
            return False

    async def start(self) -> None:
        conn = await self.pool.acquire()  # held while listening: one of the pool's connections
        try:
            conn.add_termination_listener(self.on_lost)
            await conn.add_listener(self.channel, self.on_notify)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn

    async def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Any of these fails once the connection is lost, and then there is nothing to undo.
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self.on_lost)
        with contextlib.suppress(Exception):
            await conn.remove_listener(self.channel, self.on_notify)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
