"""The production topology on one machine, on loopback: ``hie deploy local``.

Three NATS JetStream nodes (R3 streams, TLS on client and route links, one NATS user per
member), a PostgreSQL primary with a synchronous streaming standby (TLS, ``verify-full``),
and ``hie up`` with gateway processes beside it (HTTPS), all under one folder:

    <root>/pki/          the county CA and every server's certificate
    <root>/nats/         the nodes' configurations, stores and logs
    <root>/postgres/     primary and standby
    <root>/exchange/     the exchange's data directory (secrets, NATS authority, credentials)
    <root>/topology.json what runs where: URLs, ports, process ids, files
    <root>/env           the ``HIE_*`` settings of this exchange, for a shell (``. env``)

Tests, demos and benchmarks (bench/faults.py, ``bench/ingest.py --topology local-cluster``)
use the same class, so what they exercise is what deploy/README.md tells a county to run.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.errors import EmbeddedServerError
from exchange.private_files import write_private
from exchange.servers.certs import CountyCA
from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority
from exchange.servers.nats_cluster import NatsCluster
from exchange.servers.netns import Network


@dataclass
class LocalTopology:
    root: Path
    consortium: str = "demo"
    gateways: int = 2
    isolated: bool = False  # each NATS node in a network namespace of its own (root)
    # Where the NATS nodes' leaf ports listen, if not on loopback: the bridge of the village
    # clinics' network namespaces (exchange/servers/edge_lab.py).
    leaf_host: str | None = None
    # The consortium's crypto profile (intl or gm) for the exchange set up here; by default
    # HIE_CRYPTO_PROFILE of this process, since `hie up` below runs without this process's
    # HIE_ settings (unset: the exchange's default, intl). It is recorded in the exchange's
    # data directory by its first start, and kept.
    crypto_profile: str | None = field(default_factory=lambda: os.environ.get("HIE_CRYPTO_PROFILE"))
    nats: NatsCluster | None = None
    postgres: Any = None
    exchange: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "exchange"

    def start_servers(self) -> dict[str, str]:
        """CA, NATS cluster and PostgreSQL pair; the ``HIE_*`` settings for ``hie`` on them."""
        from exchange.servers.replication import ReplicatedPostgres

        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ca = CountyCA(self.root / "pki", self.consortium)
        authority = NatsAuthority(self.data_dir / AUTHORITY_DIR, self.consortium)
        self.nats = NatsCluster(
            self.root / "nats",
            3,
            ca=ca,
            authority=authority,
            network=Network(3) if self.isolated else None,
            leaf_host=self.leaf_host,
        )
        self.postgres = ReplicatedPostgres(self.root / "postgres", self.consortium)
        try:
            nats_url = self.nats.start()
            database_url = self.postgres.start()
        except BaseException:
            self.stop()
            raise
        creds = self.data_dir / "creds" / "exchange.creds"
        creds.parent.mkdir(parents=True, exist_ok=True)
        write_private(creds, authority.service_creds())
        http = ca.issue("http", ["127.0.0.1", "localhost"])
        self.env = {
            "HIE_DATA_DIR": str(self.data_dir),
            "HIE_CONSORTIUM": self.consortium,
            "HIE_DATABASE_URL": database_url,
            "HIE_NATS_URL": nats_url,
            "HIE_NATS_CREDS": str(creds),
            "HIE_NATS_CA": str(ca.cert_path),
            "HIE_HTTP_CERT": str(http.cert),
            "HIE_HTTP_KEY": str(http.key),
            "HIE_HTTP_PORT": "0",
            "HIE_GATEWAY_PROCESSES": str(self.gateways),
        }
        if self.crypto_profile:
            self.env["HIE_CRYPTO_PROFILE"] = self.crypto_profile
        write_private(
            self.root / "env",
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items()),
        )
        self._describe()
        return self.env

    def start_exchange(self, command: str = "up", timeout: float = 120.0) -> str:
        """``hie up`` (or ``hie demo``) on the servers, with its gateway processes; its URL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIE_")}
        run_file = self.data_dir / "run.json"
        run_file.unlink(missing_ok=True)
        with open(self.root / "exchange.log", "ab") as log:  # the child keeps its own copy
            self.exchange = subprocess.Popen(
                [sys.executable, "-m", "exchange.cli", command],
                env={**env, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exchange.poll() is not None:
                tail = (self.root / "exchange.log").read_text(errors="replace")[-3000:]
                raise EmbeddedServerError(f"hie {command} exited; its log ends:\n{tail}")
            if run_file.exists():
                doc = json.loads(run_file.read_text())
                if doc.get("http_url") and doc.get("pid") == self.exchange.pid:
                    self._describe()
                    return str(doc["http_url"])
            time.sleep(0.2)
        raise EmbeddedServerError(f"hie {command} was not ready within {timeout:.0f} s")

    def kill_exchange(self) -> None:
        """SIGKILL ``hie up`` and its gateway processes, as a lost host."""
        if self.exchange is not None and self.exchange.poll() is None:
            os.killpg(self.exchange.pid, signal.SIGKILL)
            self.exchange.wait(10)

    def stop_exchange(self) -> None:
        if self.exchange is not None and self.exchange.poll() is None:
            self.exchange.send_signal(signal.SIGINT)
            try:
                self.exchange.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_exchange()

    def stop(self) -> None:
        self.stop_exchange()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def _describe(self) -> None:
        doc: dict[str, Any] = {
            "consortium": self.consortium,
            "env": self.env,
            "exchange_pid": self.exchange.pid if self.exchange else None,
        }
        if self.nats is not None:
            doc["nats"] = [
                {
                    "name": n.address.name,
                    "host": n.address.host,
                    "client_port": n.address.client_port,
                    "pid": n.proc.pid if n.proc else None,
                    "config": str(n.config),
                    "log": str(n.log),
                }
                for n in self.nats.nodes
            ]
        (self.root / "topology.json").write_text(json.dumps(doc, indent=1) + "\n")

    def __enter__(self) -> LocalTopology:
        self.start_servers()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
