"""A village clinic's edge node against a real hub (exchange/servers/edge.py), on loopback: the
hub in the exchange's operator/JWT mode with its JetStream domain and a leaf port, the edge a
leaf node logged in as a user made for it alone. With the hub down, the clinic's submissions
are acknowledged by its edge; once the hub is back they reach the hub's submit stream once
each and in order, the edge's queue empties, the hub's receipts for the clinic come down to
the edge, and a restart of the exchange (which updates every stream) keeps the edge's source."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import nkeys
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from exchange.private_files import write_private
from exchange.servers.edge import (
    EDGE_RECEIPTS,
    EDGE_RECEIVED,
    EDGE_SUBMIT,
    edge_config,
    edge_creds,
    edge_streams,
    edge_subject,
    edge_submit_consumer,
    register_edge,
)
from exchange.servers.embedded import free_port, nats_server_binary
from exchange.servers.nats import GATEWAY_CONSUMER, ensure_streams, stream_name
from exchange.servers.nats_accounts import NatsAuthority, new_seed, public_key
from exchange.servers.nats_cluster import NatsCluster

CLINIC = "taoyuan-vc"
QUEUED = 300


class Server:
    def __init__(self, root: Path, config: str, port: int) -> None:
        self.root, self.port = root, port
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "nats.conf").write_text(config)

    def start(self) -> None:
        with open(self.root / "nats.log", "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.root / "nats.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while "Server is ready" not in (self.root / "nats.log").read_text(errors="replace"):
            assert self.proc.poll() is None, (self.root / "nats.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.proc = None
        log = self.root / "nats.log"
        log.write_text("")  # the next start's readiness is read from a fresh log

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def violations(log: Path) -> list[str]:
    """Permission violations a server logged (a subject a user was not allowed)."""
    return [line for line in log.read_text(errors="replace").splitlines() if "iolation" in line]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[tuple[str, NatsCluster, Server, Path, Path]]:
    consortium = f"e{uuid.uuid4().hex[:6]}"
    authority = NatsAuthority(tmp_path / "auth", consortium)
    # The hub as a county deploys it: three nodes configured as exchange/servers/
    # nats_cluster.py writes them (JetStream in the hub's domain, the leaf port, accounts).
    hub = NatsCluster(tmp_path / "hub", size=3, authority=authority)
    edge_port = free_port()
    service = tmp_path / "service.creds"
    write_private(service, authority.service_creds())
    leaf = tmp_path / "edge" / "leaf.creds"
    (tmp_path / "edge").mkdir()
    write_private(leaf, edge_creds(authority, consortium, CLINIC))
    # Kept with the clinic's users: removing the clinic revokes its edge's user too.
    assert len(authority.users()[CLINIC]) == 1
    client_seed = new_seed(nkeys.PREFIX_BYTE_USER)
    client = tmp_path / "edge" / "client.nk"
    write_private(client, client_seed.decode())
    edge = Server(
        tmp_path / "edge",
        edge_config(
            consortium=consortium,
            institution=CLINIC,
            store_dir=tmp_path / "edge" / "js",
            port=edge_port,
            hub_leaf_urls=hub.leaf_urls,
            leaf_creds=leaf,
            client_nkey=public_key(client_seed),
        ),
        edge_port,
    )
    hub.start()
    edge.start()
    try:
        yield consortium, hub, edge, service, client
    finally:
        edge.stop()
        hub.stop()


async def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_submissions_queued_at_the_edge_reach_the_hub_once_in_order(
    topology: tuple[str, NatsCluster, Server, Path, Path],
) -> None:
    consortium, hub, edge, service, client = topology
    submit = stream_name(consortium, "SUBMIT")

    async def at_hub() -> Client:
        return await nats.connect(hub.url.split(","), user_credentials=str(service))

    # The exchange registers the edge: its consumers for the clinic, and the source.
    hnc = await at_hub()
    hjs = hnc.jetstream()
    await ensure_streams(hjs, consortium, replicas=3)
    await register_edge(hjs, consortium, CLINIC)
    await register_edge(hjs, consortium, CLINIC)  # again (as a repeated `hie edge add`)
    # The edge makes its streams (`hie edge up`).
    enc = await nats.connect(edge.url, nkeys_seed=str(client))
    ejs = enc.jetstream()
    for stream_config in edge_streams(consortium, CLINIC):
        await ejs.add_stream(stream_config)
    await ejs.add_consumer(EDGE_SUBMIT, edge_submit_consumer(consortium, CLINIC))

    # The hub goes away; the clinic goes on submitting, each acknowledged by its edge.
    await hnc.close()
    for node in range(3):
        hub.kill(node)
    for n in range(QUEUED):
        ack = await ejs.publish(
            edge_subject(consortium, CLINIC),
            f"signed submission {n}".encode(),
            headers={"Nats-Msg-Id": f"sub-{n}", EDGE_RECEIVED: "2026-12-06T09:00:00+08:00"},
        )
        assert ack.stream == EDGE_SUBMIT
    assert (await ejs.stream_info(EDGE_SUBMIT)).state.messages == QUEUED

    # Back: the exchange starts again (updating every stream), and the queue comes up.
    for node in range(3):
        hub.start_node(node)
    hnc = await at_hub()
    hjs = hnc.jetstream()
    await ensure_streams(hjs, consortium, replicas=3)
    assert [s.name for s in (await hjs.stream_info(submit)).config.sources or []] == [EDGE_SUBMIT]

    async def all_up() -> bool:
        return (await hjs.stream_info(submit)).state.messages >= QUEUED

    await wait_for(all_up, 60)
    await asyncio.sleep(1)
    assert (await hjs.stream_info(submit)).state.messages == QUEUED  # none twice
    got: list[Msg] = []
    # Read as the gateway reads (a work queue takes one consumer per subject).
    sub = await hjs.pull_subscribe_bind(GATEWAY_CONSUMER, stream=submit)
    while len(got) < QUEUED:
        for msg in await sub.fetch(100, timeout=5):
            got.append(msg)
            await msg.ack()
    assert [(m.headers or {})["Nats-Msg-Id"] for m in got] == [f"sub-{n}" for n in range(QUEUED)]
    assert {m.subject for m in got} == {f"hie.{consortium}.submit.{CLINIC}"}
    assert all((m.headers or {})[EDGE_RECEIVED] == "2026-12-06T09:00:00+08:00" for m in got)

    async def queue_empty() -> bool:
        return (await ejs.stream_info(EDGE_SUBMIT)).state.messages == 0

    await wait_for(queue_empty)

    # The exchange's receipts for the clinic come down to the edge (and another's do not).
    for n in range(3):
        await hjs.publish(f"hie.{consortium}.receipt.{CLINIC}", f"receipt {n}".encode())
    await hjs.publish(f"hie.{consortium}.receipt.dongcheng-thc", b"not the clinic's")

    async def receipts_down() -> bool:
        return (await ejs.stream_info(EDGE_RECEIPTS)).state.messages == 3

    await wait_for(receipts_down)
    await asyncio.sleep(1)
    assert (await ejs.stream_info(EDGE_RECEIPTS)).state.messages == 3
    await enc.close()
    await hnc.close()
    assert (
        all(violations(n.log) == [] for n in hub.nodes) and violations(edge.root / "nats.log") == []
    )
