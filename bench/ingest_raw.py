"""This machine's raw figures for the ingest benchmark's events, measured on the same servers
in the same run: the ledger's library appending one aggregate per event in batches of 100,
asyncpg COPY of the same rows, JetStream publish and fetch+ack of the same envelopes."""

from __future__ import annotations

import asyncio
import json
import secrets as pysecrets
import time
import uuid
from typing import Any

import asyncpg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from bench.ingest_topology import NatsTarget


class Fact(Aggregate):
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item


class RawLedger(Application[Any]):
    name = "rawledger"


def raw_ledger_limit(database_url: str, items: list[dict[str, Any]], batch: int = 100) -> float:
    """The ledger's library on the same PostgreSQL, one aggregate per event, in saves of
    ``batch`` events, with the exchange's cipher and compressor: events/s."""
    from exchange.ingest.ledger import ledger_env

    env = ledger_env(database_url, base64_key())
    env["APPLICATION_RECORDER_TOPIC"] = "eventsourcing.postgres:PostgresApplicationRecorder"
    app = RawLedger(env=env)
    try:
        t = time.perf_counter()
        for i in range(0, len(items), batch):
            app.save(*[Fact(item) for item in items[i : i + batch]])
        return len(items) / (time.perf_counter() - t)
    finally:
        app.close()


def base64_key() -> str:
    import base64

    return base64.b64encode(pysecrets.token_bytes(32)).decode()


async def raw_copy(database_url: str, items: list[dict[str, Any]]) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE raw_copy (id uuid, source_id text, item text)")
        rows = [(uuid.uuid4(), i["source_id"], json.dumps(i, ensure_ascii=False)) for i in items]
        t = time.perf_counter()
        for i in range(0, len(rows), 1000):
            async with conn.transaction():
                await conn.copy_records_to_table("raw_copy", records=rows[i : i + 1000])
        return len(rows) / (time.perf_counter() - t)
    finally:
        await conn.execute("DROP TABLE IF EXISTS raw_copy")
        await conn.close()


async def raw_jetstream(
    target: NatsTarget, envelopes: list[bytes], events_each: float
) -> dict[str, float]:
    """Publish the envelopes to a scratch stream and fetch+ack them back: events/s each way.
    The stream has as many copies as the exchange's own would (3 on a cluster of three)."""
    from exchange.servers.nats import cluster_size

    nc = await target.connect("raw figures")
    js = nc.jetstream()
    name = f"RAW_{uuid.uuid4().hex[:8].upper()}"
    replicas = 3 if cluster_size(nc) >= 3 else 1
    await js.add_stream(name=name, subjects=[f"raw.{name}"], num_replicas=replicas)
    try:
        t = time.perf_counter()
        acks = [await js.publish_async(f"raw.{name}", data, wait_stall=5) for data in envelopes]
        await asyncio.wait_for(asyncio.gather(*acks), 120)
        published = len(envelopes) / (time.perf_counter() - t)
        sub = await js.pull_subscribe(f"raw.{name}", durable="raw")
        t, got = time.perf_counter(), 0
        while got < len(envelopes):
            for msg in await sub.fetch(200, timeout=5):
                await msg.ack()
                got += 1
        fetched = got / (time.perf_counter() - t)
        return {
            "publish_events_per_s": published * events_each,
            "fetch_ack_events_per_s": fetched * events_each,
        }
    finally:
        await js.delete_stream(name)
        await nc.close()
