"""The read benchmark's processes and load: `hie up` started and waited for, everything the run
starts stopped on every exit path, and the load generator (bench/read_client.py, its own
process) driven phase by phase with each watched process's CPU and memory read around it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

HIE = str(Path(sys.executable).with_name("hie"))
CLIENT = str(Path(__file__).resolve().with_name("read_client.py"))


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of a process and its live children."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    return (
        times.user + times.system + sum(getattr(times, f, 0.0) for f in ("nice", "irq", "softirq"))
    )


def peak_rss_mb(proc: psutil.Process, sampled: float) -> float:
    """The kernel's high-water mark of the process's RSS where it keeps one, else sampled."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return max(sampled, int(line.split()[1]) / 1024)
    return sampled


class Processes:
    """Everything this run starts, so that every exit path stops all of it."""

    def __init__(self) -> None:
        self.popen: list[subprocess.Popen[bytes]] = []
        self.aio: list[asyncio.subprocess.Process] = []

    def stop_all(self) -> None:
        for proc in self.aio:
            with contextlib.suppress(ProcessLookupError, OSError):
                if proc.returncode is None:
                    proc.terminate()
        for p in self.popen:
            with contextlib.suppress(ProcessLookupError, OSError):
                if p.poll() is None:
                    p.terminate()
        deadline = time.monotonic() + 30
        for p in self.popen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()
        for proc in self.aio:  # the load generator: it exits at SIGTERM; this is a backstop
            with contextlib.suppress(ProcessLookupError, OSError):
                if proc.returncode is None:
                    proc.kill()


async def start_hie_up(
    env: dict[str, str], log: Path, procs: Processes, timeout: float = 180
) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [HIE, "up"], env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT
        )
    procs.popen.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(
            r"exchange ready: (https?://\S+?)/fhir/metadata", log.read_text(errors="replace")
        )
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RuntimeError(f"hie up did not become ready; its output ends:\n{tail}")


async def drive(
    config: dict[str, Any],
    watched: dict[str, psutil.Process],
    procs: Processes,
    rss: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """Run the load generator's phases; add each phase's CPU seconds per watched process."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, CLIENT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    procs.aio.append(client)
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(json.dumps(config).encode() + b"\n")
    results: dict[str, dict[str, Any]] = {}
    for phase in config["phases"]:
        ready = await asyncio.wait_for(client.stdout.readline(), 60)
        if json.loads(ready or b"{}").get("ready") != phase["name"]:
            raise RuntimeError("the load generator stopped before a phase")
        before = {name: cpu_seconds(p) for name, p in watched.items()}
        machine, began = busy_seconds(), time.monotonic()
        client.stdin.write(b"go\n")
        await client.stdin.drain()
        line = b""
        while not line:  # sample the servers' memory while the phase runs
            try:
                line = await asyncio.wait_for(client.stdout.readline(), 0.5)
                if not line:
                    raise RuntimeError("the load generator exited in the middle of a phase")
            except TimeoutError:
                pass
            for name, p in watched.items():
                with contextlib.suppress(psutil.Error):
                    rss[name] = max(rss.get(name, 0.0), p.memory_info().rss / 2**20)
        result = json.loads(line)
        result["server_cpu_s"] = {
            name: round(cpu_seconds(p) - before[name], 3) for name, p in watched.items()
        }
        # What the rest of the machine took meanwhile: other processes, interrupts (other
        # work on a shared machine skews every figure here; this says by how much).
        result["other_cpu_s"] = round(
            max(
                0.0,
                busy_seconds() - machine - result["cpu_s"] - sum(result["server_cpu_s"].values()),
            ),
            2,
        )
        result["other_share"] = round(
            result["other_cpu_s"] / ((time.monotonic() - began) * (os.cpu_count() or 1)), 3
        )
        results[phase["name"]] = result
        print(
            f"  {phase['name']}: {result['requests']} requests, {result['rps']}/s, p50 "
            f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms, {result['errors']} error(s)"
            + (f" {result['error_kinds']}" if result["errors"] else "")
            + f"; the rest of the machine used {result['other_cpu_s']} CPU s",
            flush=True,
        )
    client.stdin.close()
    await asyncio.wait_for(client.wait(), 30)
    return results
