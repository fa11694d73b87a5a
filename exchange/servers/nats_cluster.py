"""A NATS JetStream cluster: the nodes' configuration, and a local cluster on loopback.

``node_config`` writes one node's configuration — the same text a county installs on its
three NATS hosts (deploy/nats/) and the local topology runs on loopback (deploy/local/):
JetStream (in the hub's domain), the cluster routes, the leaf port the village clinics' edge
nodes connect to, TLS on client, route and leaf links, and the accounts of
exchange/servers/nats_accounts.py (included from ``accounts.conf``).

JetStream's file store syncs to disk every two minutes by default (``sync_interval``), so an
acknowledged message could be lost if *every* node lost power within that window. The
exchange keeps that default on purpose: a stream is replicated on three nodes (R3) and a
publish is acknowledged only once a majority holds it, so losing one host loses nothing;
and a sender counts a submission delivered only when its **receipt** arrives, which follows
the PostgreSQL commit (synchronously replicated), so even a whole-site power cut loses no
submission a sender believes delivered — the sender resends it under the same id.
``sync_interval: always`` would close that window for the price of most of the stream's
throughput (DESIGN.md, measured ~90% on one node); a village clinic's single edge node,
which has no replicas, is where it belongs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client

from exchange.errors import EmbeddedServerError
from exchange.servers.certs import CountyCA, Issued
from exchange.servers.edge import HUB_DOMAIN
from exchange.servers.embedded import NATS_MEMORY_LIMIT, free_port, nats_server_binary
from exchange.servers.nats_accounts import NatsAuthority
from exchange.servers.netns import Network

CLUSTER_NAME = "hie"


@dataclass(frozen=True)
class NodeAddress:
    name: str
    host: str
    client_port: int
    route_port: int
    monitor_port: int
    leaf_port: int = 7422  # village clinics' edge nodes connect here (exchange/servers/edge.py)
    # Where the leaf port listens, when not on ``host``: the clinics' edges reach the hub over
    # another network than the one its clients and routes use.
    leaf_host: str = ""

    @property
    def leaf_address(self) -> str:
        return self.leaf_host or self.host


def node_config(
    node: NodeAddress,
    peers: list[NodeAddress],
    store_dir: Path,
    *,
    tls: Issued | None,
    ca: Path | None,
    accounts: Path | None,
    sync_interval: str | None = None,
) -> str:
    """One node's configuration text (nats-server's format)."""
    lines = [
        f"server_name: {node.name}",
        f"listen: {node.host}:{node.client_port}",
        f"http: {node.host}:{node.monitor_port}  # monitoring (/healthz, /jsz): keep it on the hosts' own network",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
    ]
    lines += [
        "  # Written to disk every 2 minutes (NATS's default), on purpose: each stream has 3",
        "  # replicas and a publish is acknowledged once two nodes hold it, and a sender counts",
        "  # a submission delivered only when its receipt comes, after the (synchronously",
        "  # replicated) PostgreSQL commit; it resends otherwise. `always` would cost most of",
        "  # the stream's throughput; it belongs on a village clinic's single edge node.",
        f'  sync_interval: "{sync_interval or "2m"}"',
        "  # The hub's domain: a clinic's edge node (a leaf node with a domain of its own) and",
        "  # the hub reach each other's streams by it (exchange/servers/edge.py).",
        f"  domain: {HUB_DOMAIN}",
        "}",
    ]
    if tls is not None and ca is not None:
        lines += _tls(
            "", "clients: the node's certificate, checked by clients against the county CA", tls, ca
        )
    route = "nats-route"
    lines += [
        "cluster {",
        f"  name: {CLUSTER_NAME}",
        f"  listen: {node.host}:{node.route_port}",
        "  routes: [",
        *[f"    {route}://{p.host}:{p.route_port}" for p in peers if p.name != node.name],
        "  ]",
    ]
    if tls is not None and ca is not None:
        lines += _tls(
            "  ",
            "routes: both ends show a certificate of the county CA (mutual TLS)",
            tls,
            ca,
            verify=True,
        )
    lines.append("}")
    lines += [
        "leafnodes {  # village clinics' edge nodes, each logged in as a user made for it",
        f"  listen: {node.leaf_address}:{node.leaf_port}",
    ]
    if tls is not None and ca is not None:
        lines += _tls(
            "  ", "the node's certificate, checked by the edges against the county CA", tls, ca
        )
    lines.append("}")
    if accounts is not None:
        lines.append(f'include "{accounts.name}"  # operator, system account, resolver')
    return "\n".join(lines) + "\n"


def _tls(indent: str, why: str, tls: Issued, ca: Path, *, verify: bool = False) -> list[str]:
    """A ``tls`` block at ``indent``: the node's certificate and key, the county CA."""
    return [
        f"{indent}tls {{  # {why}",
        f'{indent}  cert_file: "{tls.cert}"',
        f'{indent}  key_file: "{tls.key}"',
        f'{indent}  ca_file: "{ca}"',
        *([f"{indent}  verify: true"] if verify else []),
        f"{indent}  timeout: 5",
        f"{indent}}}",
    ]


@dataclass
class _Node:
    address: NodeAddress
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "nats.conf"

    @property
    def log(self) -> Path:
        return self.root / "nats.log"


@dataclass
class NatsCluster:
    """``size`` nats-server nodes on loopback under ``root``, with TLS and accounts when
    given; each node can be killed and started again (fault tests and benchmarks)."""

    root: Path
    size: int = 3
    ca: CountyCA | None = None
    authority: NatsAuthority | None = None
    host: str = "127.0.0.1"
    # Each node in a network namespace of its own, so that a test can cut it off (root).
    network: Network | None = None
    # Where the nodes' leaf ports listen when not on ``host`` (on loopback): the address of the
    # bridge the village clinics' network namespaces hang off (exchange/servers/edge_lab.py).
    leaf_host: str | None = None
    nodes: list[_Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.network is not None:  # its own address: the standard ports are free there
            addresses = [
                NodeAddress(f"hie-n{i + 1}", self.network.address(i), 4222, 6222, 8222, 7422)
                for i in range(self.size)
            ]
        else:
            addresses = [
                NodeAddress(
                    f"hie-n{i + 1}",
                    self.host,
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                    self.leaf_host or "",
                )
                for i in range(self.size)
            ]
        self.nodes = [_Node(a, self.root / a.name) for a in addresses]

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (``HIE_NATS_URL``)."""
        scheme = "tls" if self.tls else "nats"
        return ",".join(f"{scheme}://{n.address.host}:{n.address.client_port}" for n in self.nodes)

    @property
    def leaf_urls(self) -> list[str]:
        """Every node's leaf port, as an edge node's remote names them."""
        scheme = "tls" if self.tls else "nats-leaf"
        return [f"{scheme}://{n.address.leaf_address}:{n.address.leaf_port}" for n in self.nodes]

    def _write_configs(self) -> None:
        for node in self.nodes:
            node.root.mkdir(parents=True, exist_ok=True)
            tls = None
            if self.ca is not None:
                names = [node.address.host, "localhost"]
                if node.address.leaf_address not in names:  # the edges check it by this name
                    names.append(node.address.leaf_address)
                tls = self.ca.issue(f"{node.address.name}", names, client=True)
            node_accounts = None
            if self.authority is not None:
                node_accounts = node.root / "accounts.conf"
                node_accounts.write_text(self.authority.server_config(node.root / "jwt"))
            node.config.write_text(
                node_config(
                    node.address,
                    [n.address for n in self.nodes],
                    node.root / "jetstream",
                    tls=tls,
                    ca=self.ca.cert_path if self.ca else None,
                    accounts=node_accounts,
                )
            )

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.network is not None and not self.network.made:
            self.network.make()
        self._write_configs()
        for i in range(self.size):
            self.start_node(i)
        return self.url

    def start_node(self, i: int) -> None:
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            return
        argv = [nats_server_binary(), "-c", str(node.config)]
        if self.network is not None:
            argv = self.network.command(i, argv)
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"GOMEMLIMIT": NATS_MEMORY_LIMIT, **os.environ},
            )
        _wait_listening(node)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: no goodbye to its peers, as when a host dies."""
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def cut(self, i: int) -> None:
        """Node ``i`` cut off the network (its namespace's link down); it keeps running."""
        assert self.network is not None, "a cluster on loopback cannot be partitioned"
        self.network.cut(i)

    def heal(self, i: int) -> None:
        assert self.network is not None
        self.network.heal(i)

    def index_of(self, server_name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.address.name == server_name:
                return i
        raise KeyError(server_name)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
        if self.network is not None:
            self.network.remove()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_listening(node: _Node) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert node.proc is not None
        if node.proc.poll() is not None:
            tail = node.log.read_text(errors="replace")[-2000:]
            raise EmbeddedServerError(f"nats-server {node.address.name} exited; log tail:\n{tail}")
        try:
            with socket.create_connection((node.address.host, node.address.client_port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise EmbeddedServerError(f"nats-server {node.address.name} did not listen within 30 s")


async def wait_for_jetstream(
    connect_once: Callable[[], Awaitable[Client]], timeout: float = 30.0
) -> None:
    """Wait until the cluster has a JetStream meta leader (``connect_once()`` → a client)."""
    deadline = time.monotonic() + timeout
    while True:
        nc = await connect_once()
        try:
            await nc.jetstream().account_info()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
