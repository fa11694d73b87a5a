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
from typing import TYPE_CHECKING

import click

from exchange.cli.common import run, usage
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.servers.edge_heal import Watch
    from exchange.servers.edge_node import EdgeNode


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
    from exchange.cli.connect import audit_first, messaging, open_ledger  # (the ledger: heavy)
    from exchange.private_files import write_private
    from exchange.servers.edge import edge_creds, register_edge
    from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority, has_authority

    if not has_authority(settings.data_dir):
        return usage(
            "hie edge add: this exchange's NATS has no accounts (the embedded default): an edge "
            "node needs a deployed hub (`hie deploy nats-accounts`, `hie deploy nats-config`)"
        )
    ledger = await asyncio.to_thread(open_ledger, settings)
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


@edge_group.command("up")
@click.option("--institution", required=True, help="the clinic's institution code")
@click.option(
    "--hub",
    required=True,
    help="the exchange's leaf ports, comma-separated (e.g. tls://nats-1:7422,tls://nats-2:7422)",
)
@click.option(
    "--creds",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the edge's leaf credentials (`hie edge add` wrote them)",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the county CA's certificate, to check the hub's (its leaf ports speak TLS)",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="the edge's folder: its store, configuration and keys (default: <data dir>/edge)",
)
@click.pass_context
def up_command(
    ctx: click.Context,
    institution: str,
    hub: str,
    creds: Path,
    ca: Path | None,
    folder: Path | None,
) -> None:
    """run the clinic's edge node: submissions are kept here while the link is down"""
    run(ctx, lambda settings: up(settings, institution, hub, creds, ca, folder))


async def up(
    settings: Settings,
    institution: str,
    hub: str,
    creds: Path,
    ca: Path | None,
    folder: Path | None,
) -> int:
    import signal

    from exchange.servers.edge_node import EdgeNode, running_edge

    where = folder or settings.data_dir / "edge"
    if running_edge(where) is not None:
        return usage(f"hie edge up: an edge already runs from {where} (`hie edge status`)")
    urls = [u.strip() for u in hub.split(",") if u.strip()]
    edge = EdgeNode(where, settings.consortium, institution, urls, creds, ca)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(edge.start)
    try:
        await edge.prepare()
        click.echo(
            f"edge of {institution} running at {edge.url} (its queue in {where}); Ctrl-C stops it",
        )
        from exchange.servers.edge_heal import Watch

        waiting = asyncio.create_task(stop.wait())
        watching, looked = Watch(settings.consortium, institution), loop.time()
        look: asyncio.Task[None] | None = None  # beside the loop: a look may wait on the hub
        while not stop.is_set():
            await asyncio.wait([waiting], timeout=1.0)
            if loop.time() - looked >= WATCH_EVERY and (look is None or look.done()):
                looked = loop.time()
                look = asyncio.create_task(watch(edge, watching))
            if edge.proc is not None and edge.proc.poll() is not None:
                click.echo(
                    f"hie edge up: the edge's nats-server stopped (see {edge.log})", err=True
                )
                return 1
    finally:
        await asyncio.to_thread(edge.stop)
    return 0


# How often the edge looks for receipts and notifications that stopped coming down.
WATCH_EVERY = 20.0


async def watch(edge: EdgeNode, watching: Watch) -> None:
    """One look over what comes down from the hub (exchange/servers/edge_heal.py); a failure
    is said and the edge goes on."""
    from exchange.servers.edge_heal import INBOX_PREFIX
    from exchange.servers.edge_node import connect_local

    try:
        nc = await connect_local(edge.url, edge.seed_file, INBOX_PREFIX)
        try:
            for stream in await watching.look(nc):
                click.echo(f"hie edge up: {stream}: asked the hub again for what it lost", err=True)
        finally:
            await nc.close()
    except Exception as exc:  # the edge keeps running; the next look tries again
        click.echo(f"hie edge up: the watch over what comes down failed: {exc!r}", err=True)


@edge_group.command("status")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="the edge's folder (default: <data dir>/edge)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.pass_context
def status_command(ctx: click.Context, folder: Path | None, as_json: bool) -> None:
    """the edge's link, what it holds for the exchange, and its last receipt"""
    run(ctx, lambda settings: status(settings, folder, as_json))


async def status(settings: Settings, folder: Path | None, as_json: bool) -> int:
    import json

    from exchange.servers.edge_node import edge_status, running_edge

    where = folder or settings.data_dir / "edge"
    doc = running_edge(where)
    if doc is None:
        click.echo(f"no edge runs from {where} (`hie edge up`)", err=True)
        return 1
    state = await edge_status(doc)
    if as_json:
        click.echo(json.dumps(state))
        return 0
    oldest, clock = state["oldest_queued_s"], state["clock_offset_s"]
    click.echo(
        f"edge of {state['institution']}: link {state['link']}; "
        f"{state['queued']} submission(s) waiting for the exchange"
        + (f", the oldest {oldest:.0f} s" if oldest is not None else "")
        + f"; last receipt {state['last_receipt_at'] or 'none yet'}"
        + (f"; {clock_words(clock)}" if clock is not None else "")
    )
    return 0


def clock_words(offset: float) -> str:
    """The clinic's clock as its receipts tell it: an upper bound of its offset, so a slow
    clock is certain and a fast one only "at most" (the exchange flags a fast one itself)."""
    if offset < -300:
        return f"this clock is at least {-offset / 60:.0f} min behind the exchange's: set it right"
    if offset < 0:
        return f"this clock is at least {-offset:.0f} s behind the exchange's"
    return f"this clock is at most {offset:.0f} s ahead of the exchange's"
