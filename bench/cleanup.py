"""What a benchmark run leaves on servers of the user's (HIE_DATABASE_URL / HIE_NATS_URL): its
database and its streams, dropped so the servers are left as they were found."""

from __future__ import annotations

import contextlib
import os

import asyncpg

from bench.ingest_topology import NatsTarget, with_database


async def drop_what_the_run_made(db_url: str, nats: str | NatsTarget, consortium: str) -> None:
    """``nats``: a target, or a URL reached with HIE_NATS_CREDS / HIE_NATS_CA if set."""
    if isinstance(nats, str):
        nats = NatsTarget.of_env({**os.environ, "HIE_NATS_URL": nats})
    with contextlib.suppress(Exception):
        admin = await asyncpg.connect(with_database(db_url, "postgres"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{consortium}" WITH (FORCE)')
        await admin.close()
    with contextlib.suppress(Exception):
        nc = await nats.connect("cleanup")
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith(f"HIE_{consortium.upper()}_"):
                await js.delete_stream(name)
        await nc.close()
