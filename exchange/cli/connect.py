"""The one place a `hie` command opens its connections to a running exchange's servers:
PostgreSQL (an asyncpg pool) and NATS, found from the settings (``HIE_*_URL``, else the
run file of a running `hie up`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from nats.aio.client import Client

from exchange.run_file import running_endpoints
from exchange.servers.keepalive import keepalive
from exchange.servers.nats import connect
from exchange.servers.nats_accounts import inbox_prefix
from exchange.settings import Settings


@contextlib.asynccontextmanager
async def database(settings: Settings, *, connections: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the exchange's database, closed when the block ends."""
    pool = await asyncpg.create_pool(
        running_endpoints(settings).database_url,
        min_size=1,
        max_size=connections,
        init=keepalive,
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def messaging(
    settings: Settings, name: str, *, creds: Path | None = None, institution: str | None = None
) -> AsyncIterator[Client]:
    """A NATS connection named ``name`` (seen in the server's connection list), drained
    when the block ends so that nothing published is lost: as the user of ``creds`` (else the
    exchange's own, HIE_NATS_CREDS), with replies under ``institution``'s own inbox prefix
    (the only one its user may read)."""
    nc = await connect(
        running_endpoints(settings).nats_url,
        name,
        creds=creds or settings.nats_creds,
        ca=settings.nats_ca,
        inbox_prefix=inbox_prefix(institution) if institution and creds else None,
    )
    try:
        yield nc
    finally:
        await nc.drain()
