"""What a benchmark run leaves on servers of the user's (HIE_DATABASE_URL / HIE_NATS_URL): its
database and its streams, dropped so the servers are left as they were found."""

from __future__ import annotations

import contextlib

import asyncpg
import nats


async def drop_what_the_run_made(db_url: str, nats_url: str, consortium: str) -> None:
    with contextlib.suppress(Exception):
        admin = await asyncpg.connect(db_url.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{consortium}" WITH (FORCE)')
        await admin.close()
    with contextlib.suppress(Exception):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith(f"HIE_{consortium.upper()}_"):
                await js.delete_stream(name)
        await nc.close()
