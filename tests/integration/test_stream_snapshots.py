"""JetStream stream snapshots (exchange.servers.jetstream_snapshots) against real servers: a
stream of many chunks, snapshotted through a window far smaller than the data (so the server
waits on our flow-control answers), deleted, and restored whole with its durable consumer's
place; a replicated stream of a 3-node TLS cluster, taken as the exchange's own user, back
on the cluster and on a single server; and the refusals an operator sees, naming the
stream."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from exchange.errors import BackupError
from exchange.servers.jetstream_snapshots import restore_stream, snapshot_stream
from exchange.servers.nats import connect, stream_name
from exchange.settings import Settings
from tests.integration.nats_cluster_fixtures import Cluster, cluster, on_cluster

__all__ = ["cluster"]  # the module's fixture


async def fill(
    js: JetStreamContext,
    name: str,
    subject: str,
    durable: str,
    *,
    count: int,
    size: int,
    fetched: int,
    replicas: int = 1,
) -> list[bytes]:
    """A stream of ``count`` random (incompressible) messages of ``size`` bytes, and a durable
    consumer that has fetched ``fetched`` of them and acknowledged the first 100."""
    config = StreamConfig(
        name=name, subjects=[subject], num_replicas=replicas, storage=StorageType.FILE
    )
    # A cluster whose node an earlier test restarted places three copies once that node is
    # back among its peers: until then it refuses the stream as "peer offline" (10005).
    for attempt in range(100):
        try:
            await js.add_stream(config)
            break
        except BadRequestError as exc:
            if exc.err_code != 10005 or attempt == 99:
                raise
            await asyncio.sleep(0.2)
    # A new replicated stream takes its messages once its replicas have elected a leader:
    # until then a publish finds no responder (NoStreamResponseError), as one here once did.
    for _ in range(100):
        with contextlib.suppress(ServiceUnavailableError, NatsTimeoutError):
            stream = await js.stream_info(name)
            if stream.cluster is None or stream.cluster.leader:
                break
        await asyncio.sleep(0.1)
    bodies = [os.urandom(size) for _ in range(count)]
    for body in bodies:
        await js.publish(subject, body)
    await js.add_consumer(name, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT))
    # On a cluster a new consumer answers once its replicas have elected a leader (until then
    # a fetch is refused as unavailable).
    for _ in range(100):
        with contextlib.suppress(ServiceUnavailableError):
            info = await js.consumer_info(name, durable)
            if info.cluster is None or info.cluster.leader:
                break
        await asyncio.sleep(0.1)
    reader = await js.pull_subscribe_bind(durable, name)
    for msg in (await reader.fetch(fetched, timeout=5))[:100]:
        await msg.ack_sync()
    return bodies


async def test_a_stream_of_many_chunks_comes_back_whole_with_its_consumer(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    nc = await connect(servers[1], "snapshot-test")
    js = nc.jetstream()
    name, subject = f"SNAP_{uuid.uuid4().hex[:8].upper()}", f"snap.{uuid.uuid4().hex[:8]}"
    try:
        # A stream of 600 random (incompressible) 8 KiB messages, ~5 MB, and a durable
        # consumer that has acknowledged the first 100 and holds 10 more unacknowledged.
        bodies = await fill(js, name, subject, "reader", count=600, size=8192, fetched=110)
        consumer = await js.consumer_info(name, "reader")

        # The snapshot, 16 KiB chunks through a 64 KiB window: hundreds of answers.
        path = tmp_path / "stream.snapshot"
        snap = await snapshot_stream(nc, name, path, chunk_size=16 * 1024, window_size=64 * 1024)
        assert snap.size == path.stat().st_size > 4_000_000
        assert snap.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert snap.state["messages"] == 600

        # Restoring over a stream that exists is refused, naming it.
        with pytest.raises(BackupError, match=name):
            await restore_stream(nc, snap.meta, path)

        # Gone, then restored from the snapshot: every message, and the consumer's place.
        await js.delete_stream(name)
        info = await restore_stream(nc, snap.meta, path)
        assert info["state"]["messages"] == 600
        got = [(await js.get_msg(name, seq)).data for seq in range(1, 601)]
        assert got == bodies
        again = await js.consumer_info(name, "reader")
        assert (
            (again.ack_floor.stream_seq, again.delivered.stream_seq, again.num_pending)
            == (
                consumer.ack_floor.stream_seq,
                consumer.delivered.stream_seq,
                consumer.num_pending,
            )
            == (100, 110, 490)
        )
    finally:
        try:
            await js.delete_stream(name)
        finally:
            await nc.close()


async def test_a_snapshot_of_a_missing_stream_is_refused_naming_it(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    nc = await connect(servers[1], "snapshot-test")
    try:
        with pytest.raises(BackupError, match=r"NO_SUCH_STREAM.*stream not found"):
            await snapshot_stream(nc, "NO_SUCH_STREAM", tmp_path / "x.snapshot")
    finally:
        await nc.close()


async def test_a_replicated_stream_comes_back_on_the_cluster_and_on_a_single_server(
    cluster: Cluster, settings: Settings, servers: tuple[str, str], tmp_path: Path
) -> None:
    async with on_cluster(cluster, settings) as on:
        assert on.nats_url
        nc = await connect(on.nats_url, "snapshot-test", creds=on.nats_creds, ca=on.nats_ca)
        single = await connect(servers[1], "snapshot-test")
        js, name = nc.jetstream(), stream_name(on.consortium, "RECEIPTS")
        subject = f"hie.{on.consortium}.receipt.thc-a"
        try:
            # Three copies of a stream on the cluster, with a durable consumer half way.
            bodies = await fill(
                js, name, subject, "receipts-thc-a", count=200, size=2048, fetched=100, replicas=3
            )

            # Taken as the exchange's own user, over TLS, from the stream's leader.
            path = tmp_path / "receipts.snapshot"
            snap = await snapshot_stream(nc, name, path, chunk_size=8192, window_size=32768)
            await js.delete_stream(name)

            # Back on the cluster with its three copies, and on a single server with one.
            for client, replicas in ((nc, 3), (single, 1)):
                meta = {**snap.meta, "config": {**snap.config, "num_replicas": replicas}}
                info = await restore_stream(client, meta, path)
                assert info["config"]["num_replicas"] == replicas
                assert info["state"]["messages"] == 200
                there = client.jetstream()
                got = [(await there.get_msg(name, seq)).data for seq in (1, 100, 200)]
                assert got == [bodies[0], bodies[99], bodies[199]]
                # On the cluster, its consumer forms and elects first: until then the request
                # finds no consumer, or goes unanswered (a timeout) on a busy machine.
                for _ in range(100):
                    with contextlib.suppress(NotFoundError, NatsTimeoutError):
                        consumer = await there.consumer_info(name, "receipts-thc-a")
                        if consumer.num_pending == 100:
                            break
                    await asyncio.sleep(0.1)
                assert (consumer.ack_floor.stream_seq, consumer.num_pending) == (100, 100)
        finally:
            for client in (nc, single):
                try:
                    await client.jetstream().delete_stream(name)
                except Exception:
                    pass
                await client.close()
