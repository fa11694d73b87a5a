"""`hie notifications`: print an institution's notifications (referral steps) as JSON lines,
acknowledging each once printed; what arrived while it was away comes first, in order."""

from __future__ import annotations

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
@click.pass_context
def notifications_command(
    ctx: click.Context, institution: str, follow: bool, creds: Path | None
) -> None:
    """print an institution's notifications (referral steps), acknowledging them; what it
    missed while away comes first"""
    run(ctx, lambda settings: notifications(settings, institution, follow=follow, creds=creds))


async def notifications(
    settings: Settings, institution: str, *, follow: bool, creds: Path | None = None
) -> int:
    """Print the notifications, acknowledging each once printed."""
    from adapters.nats import NotificationClient
    from exchange.cli.connect import messaging

    shown = 0
    async with messaging(
        settings, f"hie-notifications-{institution}", creds=creds, institution=institution
    ) as nc:
        client = NotificationClient(nc, settings.consortium, institution)
        try:
            while True:
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
