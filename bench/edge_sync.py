"""What a village clinic's edge node costs its sender per submission (bench/edge.py): the
edge's JetStream stores with ``sync_interval: always`` (an fsync per message, so a power cut
loses nothing it acknowledged); the same publishes to an edge with NATS's default (a sync
every 2 minutes) say what that fsync costs, measured interleaved on the same machine, beside
the machine's own fsync latency on the same file system.

Each edge runs alone on loopback (its link to a hub that is not there: acknowledging a
publish is the edge's own work), and is sent signed submissions one at a time as `hie submit`
sends them (adapters/nats.py's ``EdgeSubmitClient.queue``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from adapters.nats import EdgeSubmitClient
from bench.ingest_load import quantile
from exchange.servers.edge_node import EdgeNode
from exchange.servers.embedded import free_port

SETTINGS = {"always": "always", "default": "2m"}  # nats-server's default sync_interval


def fsync_latency(folder: Path, count: int = 500, size: int = 2048) -> dict[str, float]:
    """Appending ``size`` bytes to a file and fsyncing it, ``count`` times: this file
    system's raw price of what ``always`` asks for each message."""
    path = folder / "fsync.probe"
    block = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    took = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            took.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    took.sort()
    return {
        "fsync_p50_ms": round(quantile(took, 0.5) * 1000, 3),
        "fsync_p99_ms": round(quantile(took, 0.99) * 1000, 3),
        "fsyncs_per_s": round(count / sum(took)),
    }


async def publish_cost(
    folder: Path,
    consortium: str,
    institution: str,
    leaf_creds: Path,
    envelopes: list[dict[str, Any]],
    rounds: int,
) -> dict[str, dict[str, float]]:
    """Per setting: publish → acknowledgement latency (p50, p99, ms) and acknowledgements a
    second, one at a time, over ``envelopes`` sent to each edge in ``rounds`` alternating
    rounds (the first setting of a round alternates too)."""
    nowhere = [f"nats-leaf://127.0.0.1:{free_port()}"]  # no hub: the edge works alone
    edges = {
        name: EdgeNode(
            folder / name, consortium, institution, nowhere, leaf_creds, sync_interval=interval
        )
        for name, interval in SETTINGS.items()
    }
    took: dict[str, list[float]] = {name: [] for name in edges}
    try:
        clients = {}
        for name, edge in edges.items():
            edge.start()
            await edge.prepare()
            clients[name] = (await edge.connect(), edge)
        per_round = max(1, len(envelopes) // rounds)
        for r in range(rounds):
            names = list(edges) if r % 2 == 0 else list(reversed(edges))
            for name in names:
                nc, _ = clients[name]
                client = EdgeSubmitClient(nc, consortium, institution)
                for envelope in envelopes[r * per_round : (r + 1) * per_round]:
                    began = time.perf_counter()
                    await client.queue(envelope)
                    took[name].append(time.perf_counter() - began)
        for nc, _ in clients.values():
            await nc.close()
    finally:
        for edge in edges.values():
            edge.stop()
    out = {}
    for name, values in took.items():
        values.sort()
        out[name] = {
            "publish_ack_p50_ms": round(quantile(values, 0.5) * 1000, 3),
            "publish_ack_p99_ms": round(quantile(values, 0.99) * 1000, 3),
            "acks_per_s": round(len(values) / sum(values)),
            "publishes": len(values),
        }
    return out
