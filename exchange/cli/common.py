"""What every `hie` command shares: the settings (loaded once, when a command first needs
them), running a command's coroutine, and the plain messages and exit codes of a refusal."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import click

from exchange.errors import ExchangeError
from exchange.settings import Settings, load_settings
from exchange.telemetry import logs

Body = Callable[[Settings], Coroutine[Any, Any, int]]


def settings_of(ctx: click.Context) -> Settings:
    """The settings the command runs with: the ones given to the root command (tests pass
    them as ``obj``), else those of the environment, read once."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = load_settings()
    assert isinstance(root.obj, Settings)
    return root.obj


def run(
    ctx: click.Context,
    body: Body,
    *,
    fast: bool = False,
    log_level: str = "WARNING",
    first: Callable[[], object] | None = None,
) -> NoReturn:
    """Run ``body(settings)`` to its exit code; an exchange error is one line on stderr
    (``hie: ...``) and exit code 2. The log says records from ``log_level`` up, unless
    HIE_LOG_LEVEL says otherwise. ``first`` runs before the settings are loaded (which
    generates any secret the data directory lacks), and may refuse in the same way."""
    try:
        if first is not None:
            first()
        settings = settings_of(ctx)
        logs.set_level(settings.log_level or log_level)
        code = _run_fast(body(settings)) if fast else asyncio.run(body(settings))
    except ExchangeError as exc:
        click.echo(f"hie: {exc}", err=True)
        code = 2
    ctx.exit(code)


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Run the exchange's loops on uvloop where it is installed (its event loop and the
    asyncpg and NATS protocols on it cost a fraction of the standard loop's CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def usage(message: str) -> int:
    """A command used wrongly: the message on stderr, exit code 2."""
    click.echo(message, err=True)
    return 2


def operator() -> str:
    """Who ran the command, as far as this machine knows: its login name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"
