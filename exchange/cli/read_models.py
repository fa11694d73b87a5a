"""`hie projections rebuild`: empty the read models; the running exchange replays the whole
ledger into them (audited)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from exchange.cli.common import run
from exchange.settings import Settings


@click.group("projections")
def projections_group() -> None:
    """the read models"""


@projections_group.command("rebuild")
@click.pass_context
def rebuild_command(ctx: click.Context) -> None:
    """empty them; the running exchange replays the ledger into them"""
    run(ctx, rebuild)


async def rebuild(settings: Settings) -> int:
    """Empty the read models; the running exchange replays the whole ledger into them."""
    from audit.postgres import AuditStore
    from exchange.cli.connect import database
    from projections.fields import FieldCipher
    from projections.postgres import PatientRecordProjection

    async with database(settings) as pool:
        await AuditStore(pool, settings.profile).append(
            {
                "action": "admin.projections.rebuild",
                "role": "admin",
                "decision": "permit",
                "reasons": [],
            },
            datetime.now(UTC),
        )
        await PatientRecordProjection(
            pool, _no_read, fields=FieldCipher(settings.secrets.projection_key, settings.profile)
        ).rebuild()
    click.echo(
        "read models emptied; the running exchange is replaying the ledger into them "
        "(reads show less until it has caught up)"
    )
    return 0


async def _no_read(after: int, limit: int) -> list[Any]:
    return []
