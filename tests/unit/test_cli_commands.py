"""`hie` imports a command's module only when the command is asked for: a replay worker
(spawned, so it first imports its parent's main script, the `hie` entry point) and every
`hie <command>` then load only what they need."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from exchange.cli.main import COMMANDS, hie

PROBE = """
import json, sys
import exchange.cli.main as m
before = sorted(n for n in sys.modules if n.startswith(("exchange.", "projections.", "consent.")))
m.hie.get_command(None, "token")
after = sorted(n for n in sys.modules if n.startswith("exchange.cli."))
m.hie.get_command(None, "edge")  # its status and up need neither the ledger nor the API
heavy = [n for n in ("exchange.bootstrap", "exchange.api.app", "fastapi") if n in sys.modules]
print(json.dumps({"before": before, "after": after, "heavy": heavy}))
"""


def test_importing_the_entry_point_imports_no_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(done.stdout)
    assert seen["before"] == [
        "exchange.cli",
        "exchange.cli.main",
        "exchange.telemetry",
        "exchange.telemetry.logs",
    ]
    # Asking for one command imports its module, not the others' (nor the exchange's server).
    assert "exchange.cli.tokens" in seen["after"]
    assert not {"exchange.cli.serve", "exchange.cli.edge", "exchange.cli.deploy"} & set(
        seen["after"]
    )
    assert seen["heavy"] == []  # not even once `hie edge` is loaded


def test_every_command_is_listed_and_found_under_its_name() -> None:
    ctx = click.Context(hie)
    assert hie.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = hie.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert hie.get_command(ctx, "no-such-command") is None
