"""`hie`: run the exchange, seed a demo county, submit records, issue tokens.

The commands live one group to a module (serve, submit, tokens, notifications, audit_log,
read_models, backup, restore); ``main`` runs them and turns usage errors and Ctrl-C into exit
codes. A command's module is imported when the command is run (or listed): `hie <command>`
then loads only what it needs, and so does a replay worker, which Python's spawn start method
begins by importing its parent's main script, that is, this module (importing every command
cost it about 1.6 s of CPU at each rebuild's start)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from exchange.telemetry import logs

# Each command's name, and where it is defined ("module:attribute").
COMMANDS = {
    "up": "exchange.cli.serve:up_command",
    "demo": "exchange.cli.serve:demo_command",
    "gateway": "exchange.cli.serve:gateway_command",
    "submit": "exchange.cli.submit:submit_command",
    "token": "exchange.cli.tokens:token_command",
    "audit": "exchange.cli.audit_log:audit_group",
    "deploy": "exchange.cli.deploy:deploy_group",
    "institution": "exchange.cli.institutions:institution_group",
    "edge": "exchange.cli.edge:edge_group",
    "notifications": "exchange.cli.notifications:notifications_command",
    "projections": "exchange.cli.read_models:projections_group",
    "backup": "exchange.cli.backup:backup_command",
    "restore": "exchange.cli.restore:restore_command",
}


class _Commands(click.Group):
    """A group whose commands are imported the first time they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            command: Any = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group("hie", cls=_Commands)
def hie() -> None:
    """Run the exchange, seed a demo county, submit records, issue tokens."""


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
