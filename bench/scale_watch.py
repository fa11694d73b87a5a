"""What the scale benchmark watches: the peak RSS of every process of the exchange and of the
servers (sampled throughout, per step), the database's and JetStream's bytes, and the free
disk a step needs (autovacuum: bench/autovacuum.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import nats
import psutil

SHARED_INCLUDED = "postgres largest backend, shared buffers included"


class Watch:
    """Samples RSS every ``every`` seconds: `hie up`, each gateway (its children), the
    PostgreSQL postmaster and its largest backend, nats-server. A backend's RSS counts every
    page of the shared buffer pool it has touched: one cache of a configured size, mapped by
    all of them. So a backend is measured by its own memory (RSS less what it shares, from
    /proc/<pid>/statm: no walk of its mappings), and its RSS with the shared pages is kept
    beside as ``SHARED_INCLUDED``. ``peak`` holds this step's peaks (reset by ``next_step``),
    ``peak_run`` the whole run's."""

    def __init__(
        self,
        up: psutil.Process,
        postgres: psutil.Process | None,
        nats_server: psutil.Process | None,
        every: float = 0.25,
    ) -> None:
        self.up, self.postgres, self.nats_server, self.every = up, postgres, nats_server, every
        self.peak: dict[str, float] = {}
        self.peak_run: dict[str, float] = {}

    def next_step(self) -> None:
        self.peak = {}

    def _note(self, name: str, mb: float) -> None:
        self.peak[name] = max(self.peak.get(name, 0.0), mb)
        self.peak_run[name] = max(self.peak_run.get(name, 0.0), mb)

    def sample_once(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._note("hie up", self.up.memory_info().rss / 2**20)
            for i, child in enumerate(sorted(self.up.children(), key=lambda p: p.pid)):
                with contextlib.suppress(psutil.Error):
                    self._note(f"hie gateway {i + 1}", child.memory_info().rss / 2**20)
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error):
                self._note("postgres postmaster", self.postgres.memory_info().rss / 2**20)
                largest = own = 0.0
                for child in self.postgres.children():
                    with contextlib.suppress(psutil.Error):
                        info = child.memory_info()
                        largest = max(largest, info.rss / 2**20)
                        own = max(own, (info.rss - info.shared) / 2**20)
                self._note("postgres largest backend", own)
                self._note(SHARED_INCLUDED, largest)
        if self.nats_server is not None:
            with contextlib.suppress(psutil.Error):
                self._note("nats-server", self.nats_server.memory_info().rss / 2**20)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


async def store_bytes(
    pool: asyncpg.Pool, nats_url: str, consortium: str, jetstream_dir: Path | None
) -> dict[str, int]:
    """The database's size, the consortium's streams' bytes, and (embedded NATS) the
    JetStream store's bytes on disk."""
    out = {
        "database_bytes": int(await pool.fetchval("SELECT pg_database_size(current_database())"))
    }
    nc = await nats.connect(nats_url)
    try:
        streams = await nc.jetstream().streams_info()
        out["jetstream_stream_bytes"] = sum(
            s.state.bytes
            for s in streams
            if (s.config.name or "").startswith(f"HIE_{consortium.upper()}_")
        )
    finally:
        await nc.close()
    if jetstream_dir is not None:
        out["jetstream_disk_bytes"] = await asyncio.to_thread(dir_bytes, jetstream_dir)
    return out


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


async def wal_counters(pool: asyncpg.Pool) -> dict[str, int]:
    """The server's WAL written so far (bytes, full-page images) and its checkpoints by
    cause; a phase's figures are the difference of two readings. Full-page images are what a
    random-key index costs after each checkpoint, on the first change of each of its pages."""
    wal = await pool.fetchrow("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")
    try:
        cp = await pool.fetchrow(
            "SELECT num_timed AS timed, num_requested AS requested FROM pg_stat_checkpointer"
        )
    except asyncpg.UndefinedTableError:  # before PostgreSQL 17
        cp = await pool.fetchrow(
            "SELECT checkpoints_timed AS timed, checkpoints_req AS requested FROM pg_stat_bgwriter"
        )
    return {
        "wal_bytes": int(wal["wal_bytes"]),
        "wal_fpi": int(wal["wal_fpi"]),
        "checkpoints_timed": int(cp["timed"]),
        "checkpoints_requested": int(cp["requested"]),
    }


def wal_per_event(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, Any]:
    """WAL bytes and full-page images per event between two readings, and the checkpoints."""
    d = {k: after[k] - before[k] for k in after}
    return {
        "wal_bytes_per_event": round(d["wal_bytes"] / events),
        "wal_fpi_per_1000_events": round(1000 * d["wal_fpi"] / events, 1),
        "fpi_share_of_wal": round(d["wal_fpi"] * 8192 / max(1, d["wal_bytes"]), 3),
        "checkpoints": d["checkpoints_timed"] + d["checkpoints_requested"],
    }
