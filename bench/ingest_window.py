"""One fixed-rate window of the ingest benchmark, with what shares the machine meanwhile: the
lag per submission split into the gateway's share (publish → receipt) and the projection's
(receipt → visible), PostgreSQL's autovacuum sampled throughout (bench/autovacuum.py), each
process's CPU seconds, the machine's busy share, and the kernel's pressure stall figures
(/proc/pressure: the share of the window some task waited for a core, or for I/O)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.autovacuum import Autovacuum
from bench.ingest_load import cpu_seconds, fixed_rate, quantile
from bench.ingest_topology import NatsTarget
from bench.read_load import busy_seconds

PRESSURE = Path("/proc/pressure")


def stalled_us() -> dict[str, int]:
    """Microseconds some task (``some``) or every task (``full``) stalled, since boot, for a
    core and for I/O; empty where the kernel keeps no pressure figures."""
    out: dict[str, int] = {}
    for resource in ("cpu", "io"):
        try:
            lines = (PRESSURE / resource).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            kind, *fields = line.split()
            total = dict(f.split("=") for f in fields)["total"]
            out[f"{resource}_{kind}"] = int(total)
    return out


class Usage:
    """CPU seconds per watched process (servers with their children), this process's, and
    the machine's busy and stalled time, read at the start and the end of a window."""

    def __init__(self, watched: dict[str, psutil.Process]) -> None:
        self.watched = watched

    def read(self) -> dict[str, Any]:
        return {
            "at": time.monotonic(),
            "busy": busy_seconds(),
            "self": cpu_seconds(psutil.Process(), False),
            "stalled": stalled_us(),
            "cpu": {
                n: cpu_seconds(p, n.startswith("server"))
                for n, p in self.watched.items()
                if p.is_running()
            },
        }

    @staticmethod
    def between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        span = b["at"] - a["at"]
        ours = sum(b["cpu"][n] - v for n, v in a["cpu"].items() if n in b["cpu"])
        ours += b["self"] - a["self"]
        return {
            "window_s": round(span, 1),
            "machine_busy_share": round((b["busy"] - a["busy"]) / span / (os.cpu_count() or 1), 2),
            # CPU the machine spent on processes that are not this run's (other work on it).
            "others_cpu_s": round(max(0.0, b["busy"] - a["busy"] - ours), 1),
            **{
                f"stall_{k}_share": round((b["stalled"][k] - v) / 1e6 / span, 3)
                for k, v in a["stalled"].items()
                if k in b["stalled"]
            },
            "cpu_s_by_process": {
                n: round(b["cpu"][n] - v, 1) for n, v in a["cpu"].items() if n in b["cpu"]
            },
        }


async def measure_window(
    target: NatsTarget,
    consortium: str,
    pool: asyncpg.Pool,
    envelopes: dict[str, list[bytes]],
    args: Any,
    watched: dict[str, psutil.Process],
) -> dict[str, Any]:
    """``args.rate`` events/s offered for ``args.rate_seconds``; the lag figures, what
    autovacuum did meanwhile, and the window's CPU and stalls."""
    autovacuum, stop = Autovacuum(pool), asyncio.Event()
    sampler = asyncio.create_task(autovacuum.run(stop))
    usage = Usage(watched)
    before = usage.read()
    times: list[tuple[float, float, float]] = []
    try:
        lags, to_receipt = await fixed_rate(
            target,
            consortium,
            pool,
            envelopes,
            args.rate,
            args.rate_seconds,
            args.per_submission,
            times=times,
        )
    finally:
        stop.set()
        await sampler
    projection = sorted(v - r for _, r, v in times)
    # The submissions a worker was at work for (between publish and visible), and the rest.
    busy = sorted(v - p for p, _, v in times if autovacuum.busy_between(p, v))
    idle = sorted(v - p for p, _, v in times if not autovacuum.busy_between(p, v))
    start = min(p for p, _, _ in times)
    slowest = sorted(times, key=lambda t: t[2] - t[0])[-10:]
    return {
        "lag_submissions": len(lags),
        "lag_p50_s": round(statistics.median(lags), 4),
        "lag_p99_s": round(quantile(lags, 0.99), 4),
        "lag_max_s": round(lags[-1], 4),
        "receipt_p50_s": round(statistics.median(to_receipt), 4),
        "receipt_p99_s": round(quantile(to_receipt, 0.99), 4),
        "receipt_to_visible_p99_s": round(quantile(projection, 0.99), 4),
        "lag_submissions_autovacuum_at_work": len(busy),
        "lag_p99_s_autovacuum_at_work": round(quantile(busy, 0.99), 4) if busy else None,
        "lag_max_s_autovacuum_at_work": round(busy[-1], 4) if busy else None,
        "lag_p99_s_autovacuum_idle": round(quantile(idle, 0.99), 4) if idle else None,
        # When the ten slowest were published (s into the window), and their lag.
        "slowest_published_at_s": [round(p - start, 1) for p, _, _ in slowest],
        "slowest_lag_s": [round(v - p, 3) for p, _, v in slowest],
        **(vacuumed := autovacuum.figures()),
        **(used := Usage.between(before, usage.read())),
        # An autovacuum worker's CPU is PostgreSQL's, though it exits before the window ends.
        "others_cpu_s": round(max(0.0, used["others_cpu_s"] - vacuumed["autovacuum_cpu_s"]), 1),
    }
