"""`hie audit verify`: recompute the audit log's Merkle tree from its rows, check every
signed head and every ledger submission against its anchor; name the first bad record."""

from __future__ import annotations

import asyncio

import click

from exchange.cli.common import run
from exchange.settings import Settings


@click.group("audit")
def audit_group() -> None:
    """the audit log"""


@audit_group.command("verify")
@click.pass_context
def verify_command(ctx: click.Context) -> None:
    """recompute the Merkle log from its rows, check every signed head, name the first bad
    record"""
    run(ctx, verify)


async def verify(settings: Settings) -> int:
    from exchange.cli.connect import database
    from exchange.ingest.ledger import Ledger
    from exchange.run_file import running_endpoints
    from exchange.servers.audit_heads import HeadSigner, verify_ledger, verify_log

    database_url = running_endpoints(settings).database_url
    async with database(settings) as pool:
        ledger = await asyncio.to_thread(
            Ledger,
            database_url,
            settings.secrets.ledger_cipher_key,
            settings.secrets.pseudonym_key,
            crypto_profile=settings.crypto_profile,
        )
        try:
            report = await verify_log(
                pool,
                HeadSigner(settings.consortium, settings.secrets.audit_key, settings.profile),
                database_url,
            )
            if report.ok:  # the log holds together: now check the ledger against its anchors
                report.findings += await verify_ledger(pool, ledger, settings.profile.hash_name)
        finally:
            ledger.close()
    if report.ok:
        click.echo(
            f"audit log intact: {report.records} records, {report.heads_checked} signed "
            "head(s) match; every ledger submission matches its anchor"
        )
        return 0
    first = report.findings[0]
    click.echo(f"audit log NOT intact: {first.message} [{first.code}]")
    if first.seq is not None:
        click.echo(f"first bad record: {first.seq}")
    for finding in report.findings[1:20]:
        click.echo(f"also: {finding.message} [{finding.code}]")
    return 1
