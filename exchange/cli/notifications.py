"""`hie notifications`: print an institution's notifications (referral steps) as JSON lines,
acknowledging each once printed; what arrived while it was away comes first, in order. On a
village clinic's machine with its edge node running, they are read from the edge, which keeps
what came down while the link was up: a clinic offline now still reads them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from exchange.cli.common import run
from exchange.settings import Settings


@click.command("notifications")
@click.option("--institution", required=True)
@click.option("--follow", is_flag=True, help="keep waiting for more")
@click.option(
    "--creds",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the institution's NATS credentials (from `hie institution add`)",
)
@click.option(
    "--edge",
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder of the clinic's edge node (default <data dir>/edge): when one runs "
    "there, its notifications are read from it",
)
@click.pass_context
def notifications_command(
    ctx: click.Context, institution: str, follow: bool, creds: Path | None, edge: Path | None
) -> None:
    """print an institution's notifications (referral steps), acknowledging them; what it
    missed while away comes first"""
    run(
        ctx,
        lambda settings: notifications(
            settings, institution, follow=follow, creds=creds, edge=edge
        ),
    )


async def notifications(
    settings: Settings,
    institution: str,
    *,
    follow: bool,
    creds: Path | None = None,
    edge: Path | None = None,
) -> int:
    """Print the notifications, acknowledging each once printed."""
    from adapters.nats import NotificationClient
    from exchange.cli.common import usage
    from exchange.cli.connect import messaging
    from exchange.servers.edge_node import connect_local, running_edge

    shown = 0
    doc = running_edge(edge or settings.data_dir / "edge")
    if doc is not None and doc.get("institution") != institution:
        return usage(f"hie notifications: the edge node running here is {doc.get('institution')}'s")
    async with contextlib.AsyncExitStack() as stack:
        if doc is not None:
            nc = await connect_local(str(doc["url"]), Path(doc["seed"]))
            stack.push_async_callback(nc.close)
            client = NotificationClient.at_edge(nc, settings.consortium, institution)
        else:
            nc = await stack.enter_async_context(
                messaging(
                    settings,
                    f"hie-notifications-{institution}",
                    creds=creds,
                    institution=institution,
                )
            )
            client = NotificationClient(nc, settings.consortium, institution)
        try:
            while True:
                # Without --follow it ends once nothing waits, rather than after a fetch that
                # waited its second for nothing.
                if not follow and await client.waiting() == 0:
                    break
                got = await client.fetch(
                    batch=100,
                    timeout=1.0,
                    handle=lambda note: print(json.dumps(note, ensure_ascii=False), flush=True),
                )
                shown += len(got)
                if not got and not follow:
                    break
        finally:
            await client.close()
    click.echo(f"{shown} notification(s) for {institution}", err=True)
    return 0
