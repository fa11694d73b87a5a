"""Driving the `hie` command as a user does: a clean environment per data directory, one-shot
commands, and the long-running ones (`hie up`, `hie demo`) read until they are ready."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import psutil


def clean_env(data_dir: Path) -> dict[str, str]:
    """The environment a user's `hie` runs in: none of this process's HIE_ settings, only the
    data directory, any free HTTP port and, when the tests run under a crypto profile
    (``HIE_TEST_CRYPTO_PROFILE``, as the integration tests do), that profile, which an exchange
    set up in ``data_dir`` records and keeps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIE_")}
    env |= {"HIE_DATA_DIR": str(data_dir), "HIE_HTTP_PORT": "0", "PYTHONUNBUFFERED": "1"}
    if profile := os.environ.get("HIE_TEST_CRYPTO_PROFILE"):
        env["HIE_CRYPTO_PROFILE"] = profile
    return env


def hie(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def read_until(stream: IO[str], marker: str, timeout: float = 180) -> str:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError("output ended early:\n" + "".join(lines))


class Served:
    """`hie <command>` running an exchange on ``data_dir``, its output read until ready;
    with ``log``, its log lines (stderr) go there, at INFO: all it says."""

    def __init__(
        self,
        data_dir: Path,
        command: str = "up",
        ready: str = "exchange ready",
        log: Path | None = None,
    ) -> None:
        self.env = clean_env(data_dir)
        self.log = log
        with open(log or os.devnull, "w") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exchange.cli", command],
                env={**self.env, "HIE_LOG_LEVEL": "INFO"} if log else self.env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=sink if log else subprocess.STDOUT,
            )
        assert self.proc.stdout
        try:
            self.out = read_until(self.proc.stdout, ready)
        except BaseException:
            self.stop()
            raise
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


class Demo(Served):
    """`hie demo`: the demo county seeded, its tokens and patients read from its output."""

    def __init__(self, data_dir: Path, log: Path | None = None) -> None:
        super().__init__(data_dir, "demo", "Ctrl-C stops everything", log)
        self.url = re.search(r"demo is running at (\S+)", self.out).group(1)  # type: ignore[union-attr]
        tokens = re.findall(r"token \(.*\):\n\s+(\S+)", self.out)
        self.physician, self.regulator, self.township = tokens
        self.patients = re.findall(r"Patient/([0-9a-f-]{36})/", self.out)
