"""A 3-node NATS JetStream cluster on loopback, with TLS on every link and the exchange's
accounts (exchange/servers/nats_accounts.py), started once per test module; and settings
for an exchange on it (each test its own consortium, whose account is pushed to the running
cluster as a province adds a consortium)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from exchange.private_files import write_private
from exchange.servers import netns
from exchange.servers.certs import CountyCA
from exchange.servers.nats import connect
from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority, push_account
from exchange.servers.nats_cluster import NatsCluster, wait_for_jetstream
from exchange.servers.netns import Network
from exchange.settings import Settings


@dataclasses.dataclass
class Cluster:
    nats: NatsCluster
    ca: CountyCA
    authority_dir: Path

    @property
    def url(self) -> str:
        return self.nats.url

    async def client(
        self,
        creds: Path | None,
        *,
        inbox: str | None = None,
        errors: list[str] | None = None,
        closed: asyncio.Event | None = None,
    ) -> Client:
        """A connection as the user of ``creds``; the errors the server sends go to
        ``errors``; ``closed`` is set when the connection is closed for good."""

        async def on_error(exc: Exception) -> None:
            if errors is not None:
                errors.append(str(exc))

        async def on_closed() -> None:
            if closed is not None:
                closed.set()

        options: dict[str, Any] = {
            "error_cb": on_error,
            "closed_cb": on_closed,
            "max_reconnect_attempts": 2,
        }
        if creds is not None:
            options["user_credentials"] = str(creds)
        if inbox is not None:
            options["inbox_prefix"] = inbox
        return await nats.connect(
            self.url.split(","),
            tls=ssl.create_default_context(cafile=str(self.ca.cert_path)),
            **options,
        )


def _cluster(root: Path, network: Network | None) -> Iterator[Cluster]:
    ca = CountyCA(root / "pki", "testcounty")
    authority = NatsAuthority(root / AUTHORITY_DIR, "base")
    nodes = NatsCluster(root / "nodes", 3, ca=ca, authority=authority, network=network)
    try:
        nodes.start()
        yield Cluster(nodes, ca, root / AUTHORITY_DIR)
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes on loopback."""
    yield from _cluster(tmp_path_factory.mktemp("nats-cluster"), None)


@pytest.fixture(scope="module")
def isolated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, each a host of its own (a network namespace), so one can be cut off.
    Needs root, as CI has; a run without it fails here rather than pass unseen."""
    assert netns.available(), "partition tests need root and iproute2 (network namespaces)"
    yield from _cluster(tmp_path_factory.mktemp("nats-hosts"), Network(3))


@contextlib.asynccontextmanager
async def on_cluster(cluster: Cluster, settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` pointed at the cluster, as the exchange's own user, its consortium's
    account pushed to the running cluster."""
    auth = settings.data_dir / AUTHORITY_DIR
    auth.symlink_to(cluster.authority_dir, target_is_directory=True)
    authority = NatsAuthority(auth, settings.consortium)
    system = settings.data_dir / "system.creds"
    write_private(system, authority.system_creds())
    service = settings.data_dir / "exchange.creds"
    write_private(service, authority.service_creds())

    async def as_system() -> Client:
        return await connect(cluster.url, "test-system", creds=system, ca=cluster.ca.cert_path)

    nc = await as_system()
    try:
        await push_account(nc, authority.account_jwt())
    finally:
        await nc.close()

    async def as_service() -> Client:
        return await connect(cluster.url, "test-service", creds=service, ca=cluster.ca.cert_path)

    await wait_for_jetstream(as_service)  # every node knows the account, with JetStream
    yield dataclasses.replace(
        settings, nats_url=cluster.url, nats_creds=service, nats_ca=cluster.ca.cert_path
    )
