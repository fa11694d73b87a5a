"""`hie edge add`: a village clinic's edge node, on the exchange's side (issue 16).

Run by the exchange's operator for a member institution: audited first, it makes the
consumers the clinic's receipts and notifications come down through and the submit stream's
source of the edge's queue (exchange/servers/edge.py), and writes the credentials of the
edge's leaf connection for the clinic's machine. The exchange's NATS must run with accounts
(`hie deploy nats-accounts`) and its nodes with the hub's domain and leaf port, as
`hie deploy nats-config` writes them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from exchange.cli.common import run, usage
from exchange.cli.connect import audit_first, messaging
from exchange.settings import Settings


@click.group("edge")
def edge_group() -> None:
    """village clinics' edge nodes: they keep a clinic's submissions while its link is down"""


@edge_group.command("add")
@click.argument("code")
@click.option(
    "--creds-out",
    "creds_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write the edge's leaf credentials (default: <data dir>/creds/CODE-edge.creds)",
)
@click.pass_context
def add_command(ctx: click.Context, code: str, creds_out: Path | None) -> None:
    """make CODE's edge node known to the exchange, and write its leaf credentials"""
    run(ctx, lambda settings: add(settings, code, creds_out))


async def add(settings: Settings, code: str, creds_out: Path | None) -> int:
    from exchange.cli.institutions import _open_ledger
    from exchange.private_files import write_private
    from exchange.servers.edge import edge_creds, register_edge
    from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority, has_authority

    if not has_authority(settings.data_dir):
        return usage(
            "hie edge add: this exchange's NATS has no accounts (the embedded default): an edge "
            "node needs a deployed hub (`hie deploy nats-accounts`, `hie deploy nats-config`)"
        )
    ledger = await asyncio.to_thread(_open_ledger, settings)
    try:
        member = await asyncio.to_thread(ledger.institution, code)
    finally:
        ledger.close()
    if member is None:
        return usage(f"hie edge add: {code} is not a member (`hie institution add` first)")
    if not await audit_first(settings, {"action": "edge.add", "institution": code}, "hie edge add"):
        return 1
    async with messaging(settings, "hie-edge-add") as nc:
        await register_edge(nc.jetstream(), settings.consortium, code)
    authority = NatsAuthority(settings.data_dir / AUTHORITY_DIR, settings.consortium)
    target = creds_out or settings.data_dir / "creds" / f"{code}-edge.creds"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, edge_creds(authority, settings.consortium, code))
    click.echo(
        f"{code}: the exchange sources its edge's queue and sends its receipts down.\n"
        f"Its edge's leaf credentials are in {target}: give them to the clinic's machine only "
        "(`hie edge up --creds`); removing the institution revokes them."
    )
    return 0
