"""`hie restore --from DIR`: the exchange made again from a `hie backup`, into a data directory
that holds no data yet, on fresh embedded servers (or a NATS server of the operator's own).

Before anything is written: the backup's files against its manifest (SHA-256) and
PostgreSQL's (``pg_verifybackup``), the consortium, the PostgreSQL major version, an empty data
directory, and the secrets against the manifest's fingerprints. Then the base backup becomes
the embedded server's data directory (its WAL replayed at a first start, its superuser given
a new password), the restored database is checked against the manifest (the ledger reaches
the recorded position, the audit tree extends the recorded root: RFC 9162 consistency), the
restore is audited, and the streams are restored with their consumers and compared with
their snapshots' state. A restore that fails removes what it made.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import click

from exchange.cli.common import operator, run
from exchange.errors import BackupError
from exchange.settings import Settings


@click.command("restore")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="a directory made by `hie backup`",
)
@click.option(
    "--streams-only",
    is_flag=True,
    help="restore only the streams: PostgreSQL was restored with its own tools (with "
    "HIE_DATABASE_URL set, that database is checked against the manifest first)",
)
@click.pass_context
def restore_command(ctx: click.Context, source: Path, streams_only: bool) -> None:
    """make the exchange again from a backup, into a data directory that holds no data

    \b
    It needs the backed-up exchange's secrets (in <data dir>/secrets/ or HIE_*; or in the
    backup, if it was made with --include-secrets) and refuses keys whose fingerprints
    differ from the manifest's. It makes the embedded PostgreSQL from the base backup and
    restores the streams with their consumers into the embedded nats-server (or the one
    HIE_NATS_URL names). Then: `hie up`, and `hie audit verify`.
    \b
    Point-in-time recovery (a PostgreSQL of your own, WAL archived continuously with
    archive_command or pg_receivewal): unpack postgres/base.tar.gz into an empty data
    directory, set restore_command to copy from the archive and recovery_target_time, create
    recovery.signal and start the server; then `hie restore --streams-only`. See
    deploy/BACKUP.md.
    """
    checked: dict[str, Any] = {}
    run(
        ctx,
        lambda settings: restore(settings, source, checked),
        first=lambda: checked.update(precheck(source, streams_only=streams_only)),
    )


def precheck(source: Path, *, streams_only: bool = False) -> dict[str, Any]:
    """Everything that can refuse the restore before it writes anything: the manifest and
    files, the consortium, the servers, an empty data directory, the secrets."""
    from exchange.servers import backup_manifest, base_backup
    from exchange.settings import Environment, present_secrets

    began = time.monotonic()
    doc = backup_manifest.read(source)
    size = backup_manifest.check_files(source, doc)
    base_backup.verify(source / "postgres")
    env = Environment.read(os.environ)
    if env.consortium != doc["consortium"]:
        raise BackupError(
            f"the backup is of consortium {doc['consortium']!r}, HIE_CONSORTIUM is "
            f"{env.consortium!r}: set HIE_CONSORTIUM={doc['consortium']}"
        )
    if env.database_url and not streams_only:
        raise BackupError(
            "HIE_DATABASE_URL is set: `hie restore` makes the embedded PostgreSQL from the base "
            "backup; restore a server of your own with PostgreSQL's tools, then run `hie "
            "restore --streams-only` (deploy/BACKUP.md)"
        )
    backed_up = int(doc["database"].get("server_version_num", 0)) // 10_000
    if not streams_only and backed_up != (here := base_backup.major_version_of_tools()):
        raise BackupError(
            f"the backup is of PostgreSQL {backed_up}; the embedded server is PostgreSQL {here}"
        )
    data_dir = env.data_dir.resolve()
    _fresh(data_dir, database=not streams_only)
    copied = _secrets_from_backup(source, doc, data_dir)
    warnings = backup_manifest.check_secrets(doc, present_secrets())
    return {
        "began": began,
        "doc": doc,
        "size": size,
        "warnings": warnings,
        "copied": copied,
        "streams_only": streams_only,
    }


def _fresh(data_dir: Path, *, database: bool) -> None:
    from exchange.errors import NotRunning
    from exchange.run_file import running_endpoints
    from exchange.settings import Settings

    try:
        running_endpoints(Settings(data_dir=data_dir))
    except NotRunning:
        pass
    else:
        raise BackupError(
            f"an exchange is running on {data_dir}: a restore goes into a new data directory",
            code="backup.not_empty",
        )
    holding = [
        str(p.relative_to(data_dir))
        for p in (data_dir / "postgres" / "pgdata", data_dir / "nats" / "jetstream")
        if p.is_dir() and any(p.iterdir()) and (database or p.name == "jetstream")
    ]
    if holding:
        raise BackupError(
            f"the data directory {data_dir} already holds data ({', '.join(holding)}): restore "
            "into a new one (HIE_DATA_DIR), or move this one away first",
            code="backup.not_empty",
        )


def _secrets_from_backup(source: Path, doc: dict[str, Any], data_dir: Path) -> list[str]:
    """A backup made with --include-secrets gives the data directory the secrets it lacks
    (neither in its secrets/ nor in HIE_*)."""
    from exchange.private_files import write_private

    folder = source / "secrets"
    if not doc["secrets"].get("included") or not folder.is_dir():
        return []
    mine = data_dir / "secrets"
    mine.mkdir(mode=0o700, parents=True, exist_ok=True)
    copied = []
    for path in sorted(folder.iterdir()):
        given = (mine / path.name).exists() or f"HIE_{path.name.upper()}" in os.environ
        if path.is_file() and not given:
            write_private(mine / path.name, path.read_text())
            copied.append(path.name)
    return copied


async def restore(settings: Settings, source: Path, checked: dict[str, Any]) -> int:
    from exchange.servers.embedded import EmbeddedNats, EmbeddedPostgres

    doc, began = checked["doc"], checked["began"]
    for line in checked["warnings"]:
        click.echo(f"warning: {line}", err=True)
    if checked["copied"]:
        click.echo(
            f"secrets taken from the backup into {settings.data_dir / 'secrets'}: "
            + ", ".join(checked["copied"]),
            err=True,
        )
    pg = None if checked["streams_only"] else EmbeddedPostgres(settings.data_dir / "postgres")
    nats = None if settings.nats_url else EmbeddedNats(settings.data_dir / "nats")
    try:
        if pg is not None:
            database = await _restore_database(settings, source, doc, pg)
        elif settings.database_url:  # restored by the operator: it must hold what was backed up
            database = await _check_database(settings, settings.database_url, doc, audit=False)
        else:
            database = None
        streams = await _restore_streams(settings, source, doc, nats)
    except BaseException:
        if pg is not None:
            shutil.rmtree(pg.pgdata, ignore_errors=True)
        if nats is not None:
            shutil.rmtree(nats.root / "jetstream", ignore_errors=True)
        click.echo("hie: the restore did not finish; what it made is removed", err=True)
        raise
    _copy_config(source, settings.data_dir)
    click.echo(
        f"restored consortium {settings.consortium} from the backup of {doc['created_at']} "
        f"into {settings.data_dir} in {time.monotonic() - began:.1f} s "
        f"({checked['size'] / 1e6:.1f} MB read)"
    )
    if database is not None:
        click.echo(
            f"  database: ledger to position {database['ledger_position']} (backup: "
            f"{doc['database']['ledger_position']}), audit log of {database['audit_size']} "
            f"records extending the backed-up tree of {doc['database']['audit']['size']}"
        )
    for name, state in streams.items():
        durables = ", ".join(state["durable_consumers"]) or "none"
        click.echo(f"  stream {name}: {state['messages']} messages; durable consumers: {durables}")
    click.echo("start it with `hie up`; `hie audit verify` then checks the whole log")
    return 0


async def _restore_database(
    settings: Settings, source: Path, doc: dict[str, Any], pg: Any
) -> dict[str, int]:
    from exchange.servers import base_backup

    await asyncio.to_thread(base_backup.unpack, source / "postgres", pg)
    await asyncio.to_thread(base_backup.recover, pg)
    url = await asyncio.to_thread(pg.start)
    try:
        return await _check_database(settings, url, doc)
    finally:
        await asyncio.to_thread(pg.stop)


async def _check_database(
    settings: Settings, url: str, doc: dict[str, Any], *, audit: bool = True
) -> dict[str, int]:
    """The restored ledger reaches the position the manifest recorded, and the restored audit
    tree extends the recorded one (an RFC 9162 consistency proof); with ``audit``, the
    restore is recorded in the audit log."""
    from datetime import UTC, datetime

    import asyncpg

    from audit.merkle import HashError, verify_consistency
    from audit.postgres import AuditStore
    from exchange.cli.backup import ledger_position

    recorded = doc["database"]
    position = await ledger_position(settings, url)
    if position < recorded["ledger_position"]:
        raise BackupError(
            f"the restored ledger ends at position {position}, before the backup's "
            f"{recorded['ledger_position']}: the base backup is incomplete"
        )
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = AuditStore(pool, settings.profile)
        try:
            tree, hasher = await store.tree(), await store.hasher()
        except HashError as exc:  # a log of another profile's hash
            raise BackupError(f"the restored audit log: {exc}") from None
        size, root = int(recorded["audit"]["size"]), bytes.fromhex(recorded["audit"]["root"])
        backed_up = recorded["audit"].get("hash", "sha256")  # a manifest from before gm: sha256
        if backed_up != hasher.name:
            raise BackupError(
                f"the backup's audit tree was hashed with {backed_up}, the restored log with "
                f"{hasher.name}: they are not the same log"
            )
        if size and not (
            tree.size >= size
            and verify_consistency(
                hasher, size, tree.size, await store.consistency(size, tree.size), root, tree.root
            )
        ):
            raise BackupError(
                f"the restored audit log (size {tree.size}) does not extend the backed-up tree "
                f"of size {size}: run `hie audit verify` on the backed-up exchange"
            )
        if audit:
            await store.append(_restore_record(doc, position), datetime.now(UTC))
    finally:
        await pool.close()
    return {"ledger_position": position, "audit_size": tree.size}


def _restore_record(doc: dict[str, Any], position: int) -> dict[str, Any]:
    return {
        "action": "admin.restore",
        "role": "admin",
        "decision": "permit",
        "reasons": [],
        "person": operator(),
        "backup_created_at": doc["created_at"],
        "ledger_position": position,
    }


async def _restore_streams(
    settings: Settings, source: Path, doc: dict[str, Any], nats: Any
) -> dict[str, dict[str, Any]]:
    """Each stream from its snapshot, consumers included, in the backup's order; its state
    must be the snapshot's. On a server of one's own, a failure deletes what it made."""
    from exchange.servers.jetstream_snapshots import exchange_streams, restore_stream
    from exchange.servers.nats import cluster_size, connect

    url = settings.nats_url if nats is None else await asyncio.to_thread(nats.start)
    assert url is not None
    done: dict[str, dict[str, Any]] = {}
    try:
        nc = await connect(url, "hie-restore", creds=settings.nats_creds, ca=settings.nats_ca)
        # As many copies as the exchange keeps on these servers (as at its start): a stream
        # of a 3-node cluster comes back on a single server, and the other way round.
        replicas = settings.nats_replicas or (3 if cluster_size(nc) >= 3 else 1)
        try:
            for name in [n for n in exchange_streams(settings.consortium) if n in doc["streams"]]:
                entry = doc["streams"][name]
                meta = json.loads((source / entry["meta"]).read_text())
                meta["config"]["num_replicas"] = replicas
                info = await restore_stream(nc, meta, source / entry["data"])
                done[name] = state = info.get("state", {})
                got = (state.get("messages", 0), state.get("last_seq", 0))
                if got != (entry["messages"], entry["last_seq"]):
                    raise BackupError(
                        f"stream {name} restored with (messages, last sequence) {got}, its "
                        f"snapshot had {(entry['messages'], entry['last_seq'])}"
                    )
                state["durable_consumers"] = await _durables(nc, name, entry)
        except BaseException:
            if nats is None:
                for name in done:
                    await nc.jetstream().delete_stream(name)
            raise
        finally:
            await nc.close()
    finally:
        if nats is not None:
            await asyncio.to_thread(nats.stop)
    return done


async def _durables(nc: Any, stream: str, entry: dict[str, Any]) -> list[str]:
    """The stream's durable consumers as the backup found them, each there again (on a
    cluster, a restored consumer is found once its replicas have formed: a few seconds)."""
    from nats.js.errors import NotFoundError

    names = [str(n) for n in entry.get("durable_consumers", [])]
    deadline = time.monotonic() + 15
    for name in names:
        while True:
            try:
                await nc.jetstream().consumer_info(stream, name)
                break
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise BackupError(
                        f"stream {stream} restored without its durable consumer {name}"
                    ) from None
                await asyncio.sleep(0.2)
    return names


def _copy_config(source: Path, data_dir: Path) -> None:
    for path in sorted((source / "config").glob("*.toml")):
        if not (data_dir / path.name).exists():
            shutil.copyfile(path, data_dir / path.name)
