"""A county's hub and its village clinics on one machine, for issue 16's tests and
bench/edge.py: the local topology (exchange/servers/local_topology.py: three NATS nodes with
TLS and accounts, a PostgreSQL pair, `hie up` with its gateways) as the hub, and each clinic a
network namespace of its own on a bridge — the clinic's machine, whose link can be taken down.

    root namespace: the hub                      namespace of clinic i (its machine)
      NATS nodes: clients on 127.0.0.1,           `hie edge up` -> the edge's nats-server
        leaf ports on the bridge's address  <---  (clients on the namespace's own loopback)
      PostgreSQL, `hie up` + gateways             `hie submit`, `hie edge status`
                         bridge <-- veth (cut: link down; heal: up) --> eth0

The exchange's operator makes each clinic a member and its edge known (`hie institution add`,
`hie edge add`) exactly as deploy/README.md says; the clinic's commands run inside its
namespace (``ip netns exec``), with only its own data directory, signing key, leaf credentials
and the county CA. Taking a clinic offline is its veth link going down (packets vanish, as when
the line to a village fails), not a process stopping; a power cut at the clinic is its edge's
processes SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from adapters.envelope import new_private_key, private_key_pem
from cryptoprofile import Profile, by_name, public_key_pem
from exchange.errors import EmbeddedServerError
from exchange.private_files import write_private
from exchange.servers.edge_node import running_edge
from exchange.servers.local_topology import LocalTopology
from exchange.servers.netns import Network
from exchange.settings import PROFILE_FILE

CLINIC_NAME = "测试村卫生室"


@dataclass
class Clinic:
    """A village clinic's machine: its namespace on the lab's network (``host``) and its data
    directory (``home``), where its signing key, its edge's leaf credentials and its edge's
    folder live, as `hie` finds them by default."""

    code: str
    host: int
    home: Path
    edge: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def key(self) -> Path:
        return self.home / "keys" / f"{self.code}.pem"  # `hie submit`'s default key

    @property
    def leaf_creds(self) -> Path:
        return self.home / "creds" / f"{self.code}-edge.creds"

    @property
    def edge_dir(self) -> Path:
        return self.home / "edge"  # `hie edge up` and `hie submit`'s default

    @property
    def edge_log(self) -> Path:
        return self.home / "edge-up.log"


@dataclass
class EdgeLab:
    """The hub under ``root``/hub and one clinic per code of ``clinics`` (root needed)."""

    root: Path
    clinics: list[str]
    consortium: str = "lab"
    gateways: int = 2
    crypto_profile: str | None = None  # the hub's (intl or gm); unset: as LocalTopology's
    hub: LocalTopology | None = None
    network: Network | None = None
    members: dict[str, Clinic] = field(default_factory=dict)

    def start(self) -> None:
        """The clinics' network, the hub (its leaf ports on the clinics' bridge) with `hie up`,
        and each clinic made a member with its edge known to the exchange. Everything started
        is stopped again if a step fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.network = Network(len(self.clinics))
        try:
            self.network.make()
            self.hub = LocalTopology(
                self.root / "hub",
                consortium=self.consortium,
                gateways=self.gateways,
                leaf_host=self.network.gateway,
                crypto_profile=self.crypto_profile or os.environ.get("HIE_CRYPTO_PROFILE"),
            )
            self.hub.start_servers()
            self.hub.start_exchange("up", timeout=300)
            for host, code in enumerate(self.clinics):
                self._join(Clinic(code, host, self.root / "clinics" / code))
        except BaseException:
            self.stop()
            raise

    def profile(self) -> Profile:
        """The crypto profile the hub's exchange was set up with (recorded in its data
        directory by `hie up`)."""
        assert self.hub is not None
        return by_name((self.hub.data_dir / PROFILE_FILE).read_text().strip())

    def _join(self, clinic: Clinic) -> None:
        """What the exchange's operator does for a new village clinic: its public key made
        a member's, its edge's leaf credentials written; the clinic keeps its private key (of
        the hub's crypto profile: Ed25519 under intl, SM2 under gm)."""
        key = new_private_key(self.profile())
        clinic.key.parent.mkdir(parents=True, exist_ok=True)
        write_private(clinic.key, private_key_pem(key).decode())
        public = self.root / f"{clinic.code}.pub.pem"
        public.write_bytes(public_key_pem(key))
        self.operator(
            *("institution", "add", clinic.code, "--name", CLINIC_NAME),
            *("--level", "village_clinic", "--public-key", str(public)),
            *("--creds-out", str(clinic.home / "creds" / f"{clinic.code}.creds")),
        )
        self.operator("edge", "add", clinic.code, "--creds-out", str(clinic.leaf_creds))
        self.members[clinic.code] = clinic

    # The hub's side ---------------------------------------------------------------------------

    @property
    def topology(self) -> LocalTopology:
        if self.hub is None:
            raise EmbeddedServerError("the lab's hub is not started")
        return self.hub

    def operator(self, *args: str, timeout: float = 180) -> str:
        """`hie ARGS` as the exchange's operator runs it on the hub; its output (it must
        succeed)."""
        done = subprocess.run(
            [sys.executable, "-m", "exchange.cli", *args],
            env={**_without_hie(os.environ), **self.topology.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise EmbeddedServerError(
                f"hie {args[0]} {args[1] if len(args) > 1 else ''} exited {done.returncode}: "
                f"{(done.stdout + done.stderr)[-2000:]}"
            )
        return done.stdout

    @property
    def leaf_urls(self) -> list[str]:
        assert self.topology.nats is not None
        return self.topology.nats.leaf_urls

    # A clinic's side -------------------------------------------------------------------------

    def clinic_env(self, code: str) -> dict[str, str]:
        """The clinic machine's settings: its data directory, consortium and the consortium's
        crypto profile (which its key and `hie submit` follow), nothing else of the hub's (no
        database, no NATS credentials but its edge's)."""
        clinic = self.members[code]
        return {
            **_without_hie(os.environ),
            "HIE_DATA_DIR": str(clinic.home),
            "HIE_CONSORTIUM": self.consortium,
            "HIE_CRYPTO_PROFILE": self.profile().name,
            "PYTHONUNBUFFERED": "1",
        }

    def in_clinic(self, code: str, argv: list[str]) -> list[str]:
        """``argv`` run on the clinic's machine (inside its namespace)."""
        assert self.network is not None
        return self.network.command(self.members[code].host, argv)

    def clinic_hie(
        self, code: str, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """`hie ARGS` run at the clinic, as its IT helper runs it."""
        return subprocess.run(
            self.in_clinic(code, [sys.executable, "-m", "exchange.cli", *args]),
            env=self.clinic_env(code),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def clinic_popen(self, code: str, *args: str) -> subprocess.Popen[str]:
        """`hie ARGS` started at the clinic (its output in pipes), for a caller that acts
        while it runs."""
        return subprocess.Popen(
            self.in_clinic(code, [sys.executable, "-m", "exchange.cli", *args]),
            env=self.clinic_env(code),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def edge_up(self, code: str, timeout: float = 120) -> None:
        """`hie edge up` at the clinic (in the background, as its service); returns once the
        edge's streams are made and it says it runs."""
        clinic = self.members[code]
        assert self.hub is not None and self.hub.env
        argv = [
            *(sys.executable, "-m", "exchange.cli", "edge", "up", "--institution", code),
            *("--hub", ",".join(self.leaf_urls), "--creds", str(clinic.leaf_creds)),
            *("--ca", self.hub.env["HIE_NATS_CA"]),
        ]
        mark = clinic.edge_log.stat().st_size if clinic.edge_log.exists() else 0
        with open(clinic.edge_log, "ab") as log:
            clinic.edge = subprocess.Popen(
                self.in_clinic(code, argv),
                env=self.clinic_env(code),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with open(clinic.edge_log, "rb") as log:
                log.seek(mark)
                said = log.read().decode(errors="replace")
            if f"edge of {code} running at" in said:
                return
            if clinic.edge.poll() is not None or time.monotonic() > deadline:
                self.edge_down(code)
                raise EmbeddedServerError(f"hie edge up at {code} did not start:\n{said[-2000:]}")
            time.sleep(0.2)

    def edge_down(self, code: str) -> None:
        """`hie edge up` stopped as an operator does (SIGTERM: it stops its nats-server)."""
        clinic = self.members[code]
        if clinic.edge is not None and clinic.edge.poll() is None:
            clinic.edge.send_signal(signal.SIGTERM)
            try:
                clinic.edge.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(clinic.edge.pid, signal.SIGKILL)
                clinic.edge.wait(10)
        clinic.edge = None
        self._kill_edge_server(clinic)  # one left behind by a power cut or a failed stop

    def power_cut(self, code: str) -> None:
        """The clinic's machine loses power: `hie edge up` and its nats-server SIGKILLed at
        once, nothing flushed or said goodbye to."""
        clinic = self.members[code]
        doc = running_edge(clinic.edge_dir)
        if clinic.edge is not None and clinic.edge.poll() is None:
            os.killpg(clinic.edge.pid, signal.SIGKILL)
            clinic.edge.wait(10)
        clinic.edge = None
        if doc is not None:
            _kill(int(doc["pid"]))

    def _kill_edge_server(self, clinic: Clinic) -> None:
        with_pid = clinic.edge_dir / "edge.json"
        try:
            pid = int(json.loads(with_pid.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return
        _kill(pid, only=("nats-server",))

    def edge_status(self, code: str) -> dict[str, Any]:
        """`hie edge status --json` at the clinic."""
        done = self.clinic_hie(code, "edge", "status", "--json", timeout=60)
        if done.returncode != 0:
            raise EmbeddedServerError(f"hie edge status at {code}: {done.stderr[-1000:]}")
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def offline(self, code: str) -> None:
        """The clinic's link down: nothing reaches its machine, nothing leaves it."""
        assert self.network is not None
        self.network.cut(self.members[code].host)

    def online(self, code: str) -> None:
        assert self.network is not None
        self.network.heal(self.members[code].host)

    # ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything the lab started, stopped; its namespaces and bridge removed."""
        for code in list(self.members):
            try:
                self.edge_down(code)
            except Exception:  # the rest must still stop
                self.power_cut(code)
        self.members.clear()
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        if self.network is not None:
            self.network.remove()
            self.network = None

    def __enter__(self) -> EdgeLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _without_hie(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("HIE_")}


def _kill(pid: int, only: tuple[str, ...] = ()) -> None:
    """SIGKILL ``pid`` (if it is still one of ``only``'s programs) and wait until it is gone."""
    try:
        proc = psutil.Process(pid)
        if only and not any(name in proc.name() for name in only):
            return
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        return
