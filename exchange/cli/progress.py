"""`hie submit`'s progress line, drawn by rich on standard error: a bar, the items done of
all, and the rate since the start. On a terminal it redraws in place; written to a file or a
pipe, it is printed once, when the run ends."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn
from rich.progress import Progress as _Bar
from rich.text import Text


class _Rate(ProgressColumn):
    """Items per second over the whole run so far (not rich's recent-window speed)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / max(elapsed, 1e-6):,.0f} items/s")


class Progress:
    """One line: a 30-cell bar, ``done/total items`` and the rate; use it as a context."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        console = Console(file=out if out is not None else sys.stderr, highlight=False)
        # stdout is left alone: the per-file lines and the summary stay on standard output.
        self._bar = _Bar(
            BarColumn(bar_width=30),
            TextColumn("{task.completed:.0f}/{task.total:.0f} items"),
            _Rate(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=5,
        )
        self._task = self._bar.add_task("submit", total=total)

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    @property
    def done(self) -> int:
        return int(self._bar.tasks[0].completed)
