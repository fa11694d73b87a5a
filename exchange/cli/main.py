"""`hie`: run the exchange, seed a demo county, submit records, issue tokens.

The commands live one group to a module (serve, submit, tokens, notifications, audit_log,
read_models, backup, restore); ``main`` runs them and turns usage errors and Ctrl-C into exit
codes."""

from __future__ import annotations

import sys

import click

from exchange.cli.audit_log import audit_group
from exchange.cli.backup import backup_command
from exchange.cli.deploy import deploy_group
from exchange.cli.edge import edge_group
from exchange.cli.institutions import institution_group
from exchange.cli.notifications import notifications_command
from exchange.cli.read_models import projections_group
from exchange.cli.restore import restore_command
from exchange.cli.serve import demo_command, gateway_command, up_command
from exchange.cli.submit import submit_command
from exchange.cli.tokens import token_command
from exchange.telemetry import logs


@click.group("hie")
def hie() -> None:
    """Run the exchange, seed a demo county, submit records, issue tokens."""


for command in (
    up_command,
    demo_command,
    gateway_command,
    submit_command,
    token_command,
    audit_group,
    deploy_group,
    institution_group,
    edge_group,
    notifications_command,
    projections_group,
    backup_command,
    restore_command,
):
    hie.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run `hie` with ``argv`` (default: the process's arguments); returns the exit code."""
    logs.configure("WARNING")  # JSON lines on stderr; a command may log more (HIE_LOG_LEVEL)
    try:
        code = hie.main(args=argv, prog_name="hie", standalone_mode=False)
    except click.ClickException as exc:  # usage errors: the message, exit code 2
        exc.show(file=sys.stderr)
        return exc.exit_code
    except click.Abort:  # Ctrl-C before a command's own loop took it over
        return 130
    return code if isinstance(code, int) else 0
