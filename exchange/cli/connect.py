"""The one place a `hie` command opens its connections to a running exchange's servers:
PostgreSQL (an asyncpg pool) and NATS, found from the settings (``HIE_*_URL``, else the
run file of a running `hie up`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from nats.aio.client import Client

from exchange.bootstrap import running_endpoints
from exchange.servers.nats import connect
from exchange.settings import Settings


@contextlib.asynccontextmanager
async def database(settings: Settings, *, connections: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the exchange's database, closed when the block ends."""
    pool = await asyncpg.create_pool(
        running_endpoints(settings).database_url, min_size=1, max_size=connections
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def messaging(settings: Settings, name: str) -> AsyncIterator[Client]:
    """A NATS connection named ``name`` (seen in the server's connection list), drained
    when the block ends so that nothing published is lost."""
    nc = await connect(running_endpoints(settings).nats_url, name)
    try:
        yield nc
    finally:
        await nc.drain()
