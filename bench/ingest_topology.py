"""The servers an ingest benchmark run goes through: the embedded single node (or the servers of
HIE_DATABASE_URL / HIE_NATS_URL), or the production topology on loopback
(exchange/servers/local_topology.py: three NATS nodes with R3 streams, TLS and accounts, a
PostgreSQL primary with a synchronous standby on ``verify-full``). Each gives the settings
``hie up`` runs with, the database URL, how to reach NATS (credentials and CA when the
servers ask for them), and the server processes whose CPU the run reports."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
from nats.aio.client import Client

EMBEDDED, GIVEN, LOCAL_CLUSTER = "embedded", "given servers", "local-cluster"


def with_database(url: str, database: str) -> str:
    """``url`` naming another database; hosts (one or several), credentials and query
    parameters kept as they are."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@dataclass(frozen=True)
class NatsTarget:
    """How every NATS connection of the run reaches the servers: their URL(s), and on a
    cluster with accounts and TLS the user's credentials and the CA that signed the nodes'
    certificates."""

    url: str
    creds: Path | None = None
    ca: Path | None = None

    async def connect(self, name: str) -> Client:
        from exchange.servers.nats import connect

        return await connect(self.url, f"bench {name}", creds=self.creds, ca=self.ca)

    def argv(self) -> list[str]:
        """Options that hand this target to a publisher process."""
        out = ["--nats-url", self.url]
        if self.creds is not None:
            out += ["--nats-creds", str(self.creds)]
        if self.ca is not None:
            out += ["--nats-ca", str(self.ca)]
        return out

    @classmethod
    def of_env(cls, env: dict[str, str]) -> NatsTarget:
        creds, ca = env.get("HIE_NATS_CREDS"), env.get("HIE_NATS_CA")
        return cls(env["HIE_NATS_URL"], Path(creds) if creds else None, Path(ca) if ca else None)


@dataclass
class Servers:
    """One topology, started: what ``hie up`` runs with (``env``), the consortium's database,
    NATS, and the server processes (name → process; its children count with it)."""

    kind: str
    env: dict[str, str]
    processes: dict[str, psutil.Process] = field(default_factory=dict)
    stop: Any = None  # stops what was started; None: servers of the user's, left running

    @property
    def database_url(self) -> str:
        return self.env["HIE_DATABASE_URL"]

    @property
    def nats(self) -> NatsTarget:
        return NatsTarget.of_env(self.env)


async def start_single(root: Path, consortium: str, gateways: int) -> Servers:
    """The embedded PostgreSQL and nats-server (or, with HIE_DATABASE_URL and HIE_NATS_URL
    set, those servers), with a database of the run's own."""
    from exchange.servers.embedded import EmbeddedServers

    base = dict(os.environ)
    db_url, nats_url = base.get("HIE_DATABASE_URL"), base.get("HIE_NATS_URL")
    servers: EmbeddedServers | None = None
    if not (db_url and nats_url):
        servers = EmbeddedServers(root / "servers")
        db_url, nats_url = servers.start()
        base = {k: v for k, v in base.items() if not k.startswith(("HIE_NATS_", "HIE_APP_"))}
        base["HIE_NATS_URL"] = nats_url
    try:
        admin = await asyncpg.connect(with_database(db_url, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{consortium}"')
        finally:
            await admin.close()
    except BaseException:
        if servers is not None:
            servers.stop()
        raise
    env = {
        **base,
        "HIE_DATA_DIR": str(root / "data"),
        "HIE_CONSORTIUM": consortium,
        "HIE_DATABASE_URL": with_database(db_url, consortium),
        "HIE_HTTP_PORT": "0",
        "HIE_GATEWAY_PROCESSES": str(gateways),
    }
    if servers is None:
        return Servers(GIVEN, env)
    procs = {
        f"server {name}": psutil.Process(server.proc.pid)
        for name, server in (("postgres", servers.postgres), ("nats-server", servers.nats))
        if server.proc is not None
    }
    return Servers(EMBEDDED, env, procs, servers.stop)


def start_local_cluster(root: Path, consortium: str, gateways: int) -> Servers:
    """Three NATS nodes and the PostgreSQL pair on loopback, as ``hie deploy local`` runs
    them (the exchange itself is started by the run, as on the single node)."""
    from exchange.servers.local_topology import LocalTopology

    topology = LocalTopology(root, consortium, gateways)
    settings = topology.start_servers()
    procs: dict[str, psutil.Process] = {}
    assert topology.nats is not None
    for node in topology.nats.nodes:
        if node.proc is not None:
            procs[f"server nats {node.address.name}"] = psutil.Process(node.proc.pid)
    for pg in topology.postgres.nodes:
        if pg.proc is not None:
            role = "primary" if pg is topology.postgres.primary else "standby"
            procs[f"server postgres {role}"] = psutil.Process(pg.proc.pid)
    return Servers(LOCAL_CLUSTER, {**os.environ, **settings}, procs, topology.stop)
