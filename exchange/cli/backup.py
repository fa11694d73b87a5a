"""`hie backup --to DIR`: a consistent backup of a running exchange (or of a stopped one on
the embedded servers, started for the while): JetStream snapshots of its streams with their
consumers, a PostgreSQL base backup with the WAL it needs, and ``manifest.json`` (what was
taken, the ledger's last position, the audit tree's size and root, every file's SHA-256, the
secrets' fingerprints). The secrets themselves stay out unless ``--include-secrets``.

The backup's directory::

    manifest.json
    postgres/base.tar.gz, pg_wal.tar.gz, backup_manifest      (pg_basebackup, tar format)
    jetstream/<stream>.json, <stream>.snapshot                (configuration and state; data)
    config/policy.toml, logins.toml                           (when the data directory has them)
    secrets/<name>                                            (only with --include-secrets)
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from exchange.cli.common import operator, run
from exchange.settings import Settings

CONFIG_FILES = ("policy.toml", "logins.toml")
SECRETS_WARNING = (
    "WARNING: this backup holds the exchange's secrets (secrets/, mode 0600): whoever reads it "
    "can decrypt the whole ledger and sign as the exchange. Keep it encrypted, apart from "
    "backups without secrets, and destroy it when no longer needed."
)
SECRETS_ADVICE = (
    "The secrets are NOT in this backup. A restore needs the same keys: keep a copy of "
    "{folder} (or the HIE_* keys) separately, offline, with the county's key custodian; "
    "manifest.json holds their fingerprints (never their values), and `hie restore` refuses "
    "keys that do not match."
)


@click.command("backup")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="a new or empty directory for the backup",
)
@click.option(
    "--include-secrets",
    is_flag=True,
    help="also copy <data dir>/secrets/ into the backup (mode 0600); it can then decrypt "
    "everything: keep it as carefully as the keys themselves",
)
@click.pass_context
def backup_command(ctx: click.Context, target: Path, include_secrets: bool) -> None:
    """back up the ledger, audit log and read models (PostgreSQL base backup with its WAL) and
    the streams with their consumers (JetStream snapshots), with a checksummed manifest

    \b
    The exchange keeps running. The secrets are not copied unless --include-secrets: keep
    them apart, with the county's key custodian; `hie restore --from DIR` checks them.
    For point-in-time recovery, archive the WAL continuously beside these base backups
    (archive_command or pg_receivewal): see deploy/BACKUP.md.
    """
    run(ctx, lambda settings: take_backup(settings, target, include_secrets=include_secrets))


def _holds_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


def _empty_target(target: Path) -> None:
    from exchange.errors import BackupError

    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: give a new or empty directory", code="usage")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)


@contextlib.asynccontextmanager
async def _servers(settings: Settings) -> AsyncIterator[Any]:
    """The running exchange's servers; for a stopped exchange on the embedded servers, those
    servers, started for the backup and stopped after it."""
    from exchange.bootstrap import start_embedded
    from exchange.errors import NotRunning
    from exchange.run_file import running_endpoints

    try:
        endpoints = running_endpoints(settings)
    except NotRunning:
        if not (settings.embedded and (settings.data_dir / "postgres" / "pgdata").is_dir()):
            raise
        endpoints = None
    if endpoints is not None:
        yield endpoints
        return
    click.echo("no exchange is running: starting its embedded servers for the backup")
    endpoints, started = await asyncio.to_thread(start_embedded, settings)
    try:
        yield endpoints
    finally:
        for server in reversed(started):
            await asyncio.to_thread(server.stop)


async def ledger_position(settings: Settings, database_url: str) -> int:
    """The ledger's last position in the database ``database_url`` names (its tables as
    they are: nothing is created)."""
    from exchange.ingest.ledger import Ledger

    ledger = await asyncio.to_thread(
        Ledger,
        database_url,
        settings.secrets.ledger_cipher_key,
        settings.secrets.pseudonym_key,
        create_tables=False,
        crypto_profile=settings.crypto_profile,
    )
    try:
        return int(await asyncio.to_thread(ledger.max_position))
    finally:
        ledger.close()


async def _database_state(settings: Settings, database_url: str, pool: Any) -> dict[str, Any]:
    """What the database holds as the base backup starts: the restore finds at least this."""
    from audit.postgres import AuditStore

    store = AuditStore(pool, settings.profile)
    tree = await store.tree()
    return {
        "server_version_num": int(await pool.fetchval("SHOW server_version_num")),
        "database": await pool.fetchval("SELECT current_database()"),
        "ledger_position": await ledger_position(settings, database_url),
        # The hash the log is made with: the restore checks its root with that one.
        "audit": {"size": tree.size, "root": tree.root.hex(), "hash": (await store.hasher()).name},
    }


async def take_backup(settings: Settings, target: Path, *, include_secrets: bool) -> int:
    _empty_target(target)
    began, created_at = time.monotonic(), datetime.now(UTC)
    try:
        snapshots, durables, database = await _take(settings, target, created_at, include_secrets)
        size, count = await asyncio.to_thread(
            _finish, settings, target, snapshots, durables, database, created_at, include_secrets
        )
    except BaseException:
        if _holds_files(target):
            click.echo(
                f"hie: the backup in {target} is incomplete (no manifest.json): remove it",
                err=True,
            )
        raise
    click.echo(
        f"backup of consortium {settings.consortium} in {target}: {count} files, "
        f"{size / 1e6:.1f} MB, in {time.monotonic() - began:.1f} s (ledger position "
        f"{database['ledger_position']}, audit log {database['audit']['size']} records, "
        f"{len(snapshots)} streams with their consumers)"
    )
    if include_secrets:
        click.echo(SECRETS_WARNING, err=True)
    else:
        click.echo(SECRETS_ADVICE.format(folder=settings.data_dir / "secrets"))
    return 0


async def _take(
    settings: Settings, target: Path, created_at: datetime, include_secrets: bool
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, Any]]:
    """The snapshots and the base backup, in their order; what each stream and the database
    held."""
    import asyncpg

    from audit.postgres import AuditStore
    from exchange.servers import base_backup
    from exchange.servers.jetstream_snapshots import (
        AFTER_DATABASE,
        BEFORE_DATABASE,
        snapshot_stream,
    )
    from exchange.servers.nats import connect, stream_name

    snapshots: dict[str, Any] = {}
    durables: dict[str, list[str]] = {}

    async def snap(what: str) -> None:
        name = stream_name(settings.consortium, what)
        # The durable consumers before the snapshot: each is in it (the exchange deletes
        # none); ephemeral ones (a sender waiting for its receipts) come and go.
        found = await nc.jetstream().consumers_info(name)
        durables[name] = sorted(c.name for c in found if c.config.durable_name)
        snapshots[name] = await snapshot_stream(nc, name, target / "jetstream" / f"{name}.snapshot")

    async with _servers(settings) as endpoints:
        (target / "jetstream").mkdir(mode=0o700)
        pool = await asyncpg.create_pool(endpoints.database_url, min_size=1, max_size=2)
        nc = await connect(
            endpoints.nats_url, "hie-backup", creds=settings.nats_creds, ca=settings.nats_ca
        )
        try:
            await AuditStore(pool, settings.profile).append(  # an admin action, in its log
                {
                    "action": "admin.backup",
                    "role": "admin",
                    "decision": "permit",
                    "reasons": [],
                    "person": operator(),
                    "secrets_included": include_secrets,
                },
                created_at,
            )
            # The order matters: see exchange.servers.jetstream_snapshots.BEFORE_DATABASE.
            for what in BEFORE_DATABASE:
                await snap(what)
            database = await _database_state(settings, endpoints.database_url, pool)
            label = f"county-hie {settings.consortium} {created_at.isoformat(timespec='seconds')}"
            await asyncio.to_thread(
                base_backup.take, endpoints.database_url, target / "postgres", label
            )
            for what in AFTER_DATABASE:
                await snap(what)
        finally:
            await nc.close()
            await pool.close()
    return snapshots, durables, database


def _finish(
    settings: Settings,
    target: Path,
    snapshots: dict[str, Any],
    durables: dict[str, list[str]],
    database: dict[str, Any],
    created_at: datetime,
    include_secrets: bool,
) -> tuple[int, int]:
    """Check the base backup, add the streams' descriptions, the configuration (and the
    secrets, if asked), then the manifest; the backup's size and number of files."""
    from exchange.servers import backup_manifest, base_backup

    base_backup.verify(target / "postgres")
    for snapshot in snapshots.values():
        backup_manifest.write_json(target / "jetstream" / f"{snapshot.stream}.json", snapshot.meta)
    _copy_config(settings, target)
    if include_secrets:
        _copy_secrets(settings, target)
    files = [p for p in target.rglob("*") if p.is_file()]
    for path in [target, *target.rglob("*")]:  # its clinical data: for the operator alone
        path.chmod(0o700 if path.is_dir() else 0o600)
    backup_manifest.write(
        target,
        {
            "format": backup_manifest.FORMAT,
            "consortium": settings.consortium,
            "created_at": created_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "database": {**database, "files": [f"postgres/{n}" for n in base_backup.FILES]},
            "streams": {
                name: {
                    "messages": s.state.get("messages", 0),
                    "first_seq": s.state.get("first_seq", 0),
                    "last_seq": s.state.get("last_seq", 0),
                    "durable_consumers": durables[name],
                    "meta": f"jetstream/{name}.json",
                    "data": f"jetstream/{name}.snapshot",
                }
                for name, s in snapshots.items()
            },
            "config": [f"config/{p.name}" for p in files if p.parent.name == "config"],
            "secrets": {
                **backup_manifest.fingerprints(backup_manifest.secret_bytes(settings.secrets)),
                "included": include_secrets,
            },
            "files": backup_manifest.describe(target, files),
        },
    )
    return sum(p.stat().st_size for p in files), len(files)


def _copy_config(settings: Settings, target: Path) -> None:
    found = [settings.data_dir / n for n in CONFIG_FILES if (settings.data_dir / n).is_file()]
    if found:
        (target / "config").mkdir(mode=0o700)
    for path in found:
        shutil.copyfile(path, target / "config" / path.name)


def _copy_secrets(settings: Settings, target: Path) -> None:
    """The data directory's secret files, each 0600 from its creation; the values the
    environment gave (HIE_*) are written out as files too, so that the backup is whole."""
    from exchange.private_files import write_private
    from exchange.servers.backup_manifest import secret_bytes, secret_text

    folder = target / "secrets"
    folder.mkdir(mode=0o700)
    for name, value in secret_bytes(settings.secrets).items():
        write_private(folder / name, secret_text(value) + "\n")
