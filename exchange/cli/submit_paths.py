"""`hie submit`'s paths: the files and directories named, checked and walked before anything
is read.

A path that is missing, not permitted, not a regular file (a FIFO, a device, a socket: never
opened, so never waited on) or a directory holding no file to read stops the run with one
line per path (``InputError``, exit 2), before anything is read or sent.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exchange.errors import ExchangeError

# What a path that is not a regular file is: such a path is never opened (a FIFO would wait
# for a writer, a device such as /dev/zero never ends).
_NOT_A_FILE = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_LEFT_OUT_OF_WALKS = (
    "hidden files, *.toml, *.md and licence files (LICENSE*, COPYING*, NOTICE*) are not read"
)
_LICENCES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")


@dataclass(frozen=True)
class InputProblem:
    """A path the run cannot read: where, a stable ``code`` and what is wrong."""

    path: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.code}]"


class InputError(ExchangeError):
    """Paths (or files) that cannot be read; ``problems`` names each, one line apiece."""

    code = "submit.input"

    def __init__(self, problems: Sequence[InputProblem | str]) -> None:
        self.problems = [str(p) for p in problems]
        super().__init__("; ".join(self.problems))


def expand(paths: Sequence[str]) -> list[Path]:
    """The files named, with directories walked in a stable order (hidden files, mapping
    files, notes and licences left out). Raises InputError naming every path that cannot be
    read: missing, not permitted, not a regular file, or a directory with no file to read."""
    out: list[Path] = []
    problems: list[InputProblem] = []
    for arg in paths:
        found, trouble = _files_of(Path(arg))
        out += found
        problems += trouble
    if problems:
        raise InputError(problems)
    return out


def _files_of(path: Path) -> tuple[list[Path], list[InputProblem]]:
    if path.is_dir():
        return _walk(path)
    problem = check_file(path)
    return ([], [problem]) if problem is not None else ([path], [])


def check_file(path: Path) -> InputProblem | None:
    """None when ``path`` is a regular file this process may read, else what is wrong with
    it. It is opened only once it is known to be a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return os_problem(path, exc)
    if stat.S_ISDIR(mode):
        return InputProblem(str(path), "path.not_a_file", "is a directory, not a file")
    if (kind := _NOT_A_FILE.get(stat.S_IFMT(mode))) is not None:
        return InputProblem(str(path), "path.not_a_file", f"is {kind}, not a file")
    return _unreadable(path)


def _walk(directory: Path) -> tuple[list[Path], list[InputProblem]]:
    try:
        os.listdir(directory)  # rglob says nothing of a directory it may not list
    except OSError as exc:
        return [], [os_problem(directory, exc)]
    files = sorted(
        f
        for f in directory.rglob("*")
        if f.is_file()  # follows links; FIFOs, devices and sockets are not files
        and not any(part.startswith(".") for part in f.relative_to(directory).parts)
        and not f.name.endswith((".toml", ".md"))
        and not f.name.upper().startswith(_LICENCES)
    )
    if not files:
        return [], [
            InputProblem(
                str(directory),
                "path.no_files",
                f"the directory holds no file to send ({_LEFT_OUT_OF_WALKS})",
            )
        ]
    problems = [p for f in files if (p := _unreadable(f)) is not None]
    return files, problems


def _unreadable(path: Path) -> InputProblem | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return os_problem(path, exc)


# A path through a file (ENOTDIR) is as missing as one that is not there.
_ERRNO_CODES = {errno.ENOENT: "path.missing", errno.ENOTDIR: "path.missing"}


def os_problem(path: Path, exc: OSError) -> InputProblem:
    """What the operating system said of ``path``, as a problem with a stable code."""
    code = _ERRNO_CODES.get(exc.errno or 0, "path.unreadable")
    return InputProblem(str(path), code, (exc.strerror or str(exc)).lower())
