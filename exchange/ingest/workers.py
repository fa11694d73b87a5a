"""Gateway processes beside `hie up`: started once the exchange is ready, restarted if one
dies, stopped (SIGINT, then SIGKILL after a grace period) with the exchange.

The ledger serialises its writers, so more gateways add no append throughput; what they add
is cores for checking signatures and items, which is where a gateway's time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

log = logging.getLogger(__name__)


class GatewayWorkers:
    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self.procs: list[asyncio.subprocess.Process] = []

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exchange.cli",
            "gateway",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,  # its log lines go to the same stderr
            start_new_session=True,
        )
        log.info("gateway process %d started", proc.pid)
        return proc

    async def run(self, stop: asyncio.Event) -> None:
        """Keep ``count`` gateways running until ``stop``."""
        self.procs = [await self._spawn() for _ in range(self.count)]
        try:
            while not stop.is_set():
                for i, proc in enumerate(self.procs):
                    if proc.returncode is not None:
                        log.error(
                            "gateway process %d exited with %s; starting another",
                            proc.pid,
                            proc.returncode,
                        )
                        self.procs[i] = await self._spawn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await self.stop()

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
