"""The embedded PostgreSQL's passwords are never readable by others, not even for a moment."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from exchange.private_files import write_private
from exchange.servers import embedded
from exchange.servers.embedded import EmbeddedPostgres


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_born_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "secret", "s3cret")
        (tmp_path / "stale").write_text("old")
        (tmp_path / "stale").chmod(0o644)
        write_private(tmp_path / "stale", "new")  # replaced, not reused with its old mode
    finally:
        os.umask(old)
    assert mode(tmp_path / "secret") == 0o600 and (tmp_path / "secret").read_text() == "s3cret"
    assert mode(tmp_path / "stale") == 0o600 and (tmp_path / "stale").read_text() == "new"


def test_initdb_password_files_are_never_world_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While initdb reads its password file, and afterwards, both files are 0600 (chmod is
    disabled here: a file written wide and narrowed afterwards would show)."""
    seen: dict[str, int] = {}

    def fake_initdb(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        pwfile = Path(next(a for a in cmd if a.startswith("--pwfile=")).split("=", 1)[1])
        seen["initdb.pw"] = mode(pwfile)
        return subprocess.CompletedProcess(cmd, 0, b"", b"")

    monkeypatch.setattr(embedded.subprocess, "run", fake_initdb)
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)
    old = os.umask(0o022)
    try:
        server = EmbeddedPostgres(tmp_path)
        server.pgdata.mkdir()
        server._initdb({})
    finally:
        os.umask(old)
    assert seen == {"initdb.pw": 0o600}
    assert not (tmp_path / "initdb.pw").exists()
    assert mode(tmp_path / "password") == 0o600
