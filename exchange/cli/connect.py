"""The one place a `hie` command opens its connections to a running exchange's servers:
PostgreSQL (an asyncpg pool) and NATS, found from the settings (``HIE_*_URL``, else the
run file of a running `hie up`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import click
from nats.aio.client import Client

from exchange.cli.common import operator
from exchange.run_file import running_endpoints
from exchange.servers.keepalive import keepalive
from exchange.servers.nats import connect
from exchange.servers.nats_accounts import inbox_prefix
from exchange.settings import Settings


@contextlib.asynccontextmanager
async def database(settings: Settings, *, connections: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the exchange's database, closed when the block ends."""
    pool = await asyncpg.create_pool(
        running_endpoints(settings).database_url,
        min_size=1,
        max_size=connections,
        init=keepalive,
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def messaging(
    settings: Settings, name: str, *, creds: Path | None = None, institution: str | None = None
) -> AsyncIterator[Client]:
    """A NATS connection named ``name`` (seen in the server's connection list), drained
    when the block ends so that nothing published is lost: as the user of ``creds`` (else the
    exchange's own, HIE_NATS_CREDS), with replies under ``institution``'s own inbox prefix
    (the only one its user may read)."""
    nc = await connect(
        running_endpoints(settings).nats_url,
        name,
        creds=creds or settings.nats_creds,
        ca=settings.nats_ca,
        inbox_prefix=inbox_prefix(institution) if institution and creds else None,
    )
    try:
        yield nc
    finally:
        await nc.drain()


def open_ledger(settings: Settings) -> Any:
    """The running exchange's ledger (blocking: call it in a thread), closed by the caller."""
    from exchange.ingest.ledger import Ledger

    return Ledger(
        running_endpoints(settings).database_url,
        settings.secrets.ledger_cipher_key,
        settings.secrets.pseudonym_key,
        settings.referral_policy,
        crypto_profile=settings.crypto_profile,
    )


async def audit_first(settings: Settings, record: dict[str, Any], command: str) -> bool:
    """Append an operator's ``record`` to the audit log before it takes effect; False (and
    said) when it could not be, so that ``command`` changes nothing."""
    from audit.postgres import AuditStore, AuditWriteError
    from exchange.database import migrate_stored_tables

    record = {"role": "admin", "decision": "permit", "reasons": [], "operator": operator()} | record
    async with database(settings, connections=1) as pool:
        try:
            await migrate_stored_tables(pool)
            await AuditStore(pool, settings.profile).append(record, datetime.now(UTC))
        except AuditWriteError:
            click.echo(
                f"{command}: the audit log could not record it, so nothing was changed; try again",
                err=True,
            )
            return False
    return True
