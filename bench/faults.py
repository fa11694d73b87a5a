"""The long fault run: the local topology (3 NATS nodes in network namespaces of their own, a
PostgreSQL primary with a synchronous standby, `hie up` with gateway processes) under a steady
stream of submissions from several members (each with its own NATS user), while random
faults land one after another:

- a NATS node SIGKILLed, started again a few seconds later;
- a NATS node cut off the network (its link down), healed a few seconds later;
- `hie up` SIGKILLed with its gateways (a lost host), started again;
- one gateway process SIGKILLed (its supervisor starts another);
- the PostgreSQL primary SIGKILLed, the standby promoted, the old primary rewound and
  following the new one.

    sudo .venv/bin/python bench/faults.py [--kills 100] [--partitions 5] [--failovers 3]
                                          [--members 3] [--pause 2.0]

Then: every submission that got an accepted receipt is in the ledger exactly once, the read
models equal a replay of the ledger, the audit log verifies. ``max_recovery_s`` is the
longest wait, over all faults, from a fault to the first accepted receipt of a batch sent
after it. Partitions need root (network namespaces); without it they are left out and said.

The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from adapters.envelope import new_private_key, private_key_pem
from adapters.nats import SubmitClient, SubmitError
from exchange.servers import netns
from exchange.servers.local_topology import LocalTopology
from exchange.servers.nats import connect
from exchange.servers.nats_accounts import inbox_prefix
from exchange.settings import load_settings
from tests.factories import visit_batch

PER_BATCH = 10


@dataclass
class Tally:
    accepted: set[str] = field(default_factory=set)
    submissions: int = 0
    # (sent at, answered at) per batch, monotonic clock
    batches: list[tuple[float, float]] = field(default_factory=list)
    faults: list[tuple[str, float]] = field(default_factory=list)
    waiting: dict[str, float] = field(default_factory=dict)  # member → its batch sent at


async def member(
    topology: LocalTopology, code: str, n0: int, tally: Tally, stop: asyncio.Event
) -> None:
    """One member: batch after batch, each sent until it has every receipt (same ids)."""
    key = new_private_key()
    pem = topology.root / f"{code}.pub.pem"
    from cryptography.hazmat.primitives import serialization

    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (topology.root / f"{code}.pem").write_bytes(private_key_pem(key))
    creds = topology.root / f"{code}.creds"
    added = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "exchange.cli",
            "institution",
            "add",
            code,
            "--name",
            "测试卫生院",
            "--level",
            "township_health_centre",
            "--public-key",
            str(pem),
            "--creds-out",
            str(creds),
        ],
        env={**os.environ, **topology.env},
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise RuntimeError(f"hie institution add {code} failed: {added.stderr[-500:]}")
    env = topology.env
    nc = await connect(
        env["HIE_NATS_URL"],
        f"bench-{code}",
        creds=creds,
        ca=Path(env["HIE_NATS_CA"]),
        inbox_prefix=inbox_prefix(code),
    )
    client = SubmitClient(nc, topology.consortium, code)
    n = n0
    try:
        while not stop.is_set():
            batch = visit_batch(code, key, n, PER_BATCH)
            n += PER_BATCH
            sent = time.monotonic()
            tally.waiting[code] = sent
            while True:
                try:
                    receipts = await client.submit(batch, wait=20, attempts=3)
                    break
                except SubmitError as exc:  # the same ids again: nothing is stored twice
                    print(f"{code}: {exc}", flush=True)
            del tally.waiting[code]
            tally.batches.append((sent, time.monotonic()))
            tally.submissions += len(batch)
            tally.accepted |= {s for s, r in receipts.items() if r["status"] == "accepted"}
    finally:
        await nc.close()


def gateway_children(topology: LocalTopology) -> list[psutil.Process]:
    if topology.exchange is None or topology.exchange.poll() is not None:
        return []
    with contextlib.suppress(psutil.NoSuchProcess):
        up = psutil.Process(topology.exchange.pid)
        return [c for c in up.children() if "gateway" in " ".join(c.cmdline())]
    return []


async def inject(topology: LocalTopology, kind: str, tally: Tally) -> None:
    """One fault, and its end (restart, heal, promote and rejoin)."""
    nats = topology.nats
    assert nats is not None
    tally.faults.append((kind, time.monotonic()))
    if kind == "kill-nats":
        i = random.randrange(3)
        nats.kill(i)
        await asyncio.sleep(random.uniform(1, 5))
        await asyncio.to_thread(nats.start_node, i)
    elif kind == "partition":
        i = random.randrange(3)
        nats.cut(i)
        await asyncio.sleep(random.uniform(3, 10))
        nats.heal(i)
    elif kind == "kill-up":
        gateways = gateway_children(topology)
        topology.kill_exchange()
        for g in gateways:
            with contextlib.suppress(psutil.NoSuchProcess):
                g.kill()
        await asyncio.to_thread(topology.start_exchange, "up", 300)
    elif kind == "kill-gateway":
        gateways = gateway_children(topology)
        if gateways:
            random.choice(gateways).kill()
    elif kind == "failover":
        pg = topology.postgres
        await asyncio.to_thread(pg.kill_primary)
        await asyncio.to_thread(pg.promote)
        await asyncio.to_thread(pg.rejoin)


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits: each coroutine of its chain of awaits, outermost first."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            chain.append(type(coro).__name__)
            break
        chain.append(
            f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})"
        )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def recovery_times(tally: Tally) -> list[tuple[str, float]]:
    """Per fault: its kind, and how long until a batch sent after it was answered."""
    out = []
    for kind, at in tally.faults:
        after = [done for sent, done in tally.batches if sent >= at]
        if after:
            out.append((kind, min(after) - at))
    return out


async def check(topology: LocalTopology, tally: Tally) -> dict[str, Any]:
    """Once everything is stopped but the servers: the ledger, the read models, the audit."""
    from exchange.bootstrap import Endpoints, open_runtime
    from tests.integration.recovery_checks import (
        assert_projection_equals_rebuild,
        ledger_counts,
    )

    settings = load_settings({**os.environ, **topology.env})
    ends = Endpoints(topology.env["HIE_DATABASE_URL"], topology.env["HIE_NATS_URL"])
    async with open_runtime(settings, ends) as rt:
        held = await ledger_counts(rt)
    lost = len(tally.accepted - set(held))
    duplicated = sum(1 for n in held.values() if n > 1)
    try:
        await assert_projection_equals_rebuild(settings)
        equal = True
    except AssertionError:
        equal = False
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exchange.cli", "audit", "verify"],
        env={**os.environ, **topology.env},
        capture_output=True,
        text=True,
    )
    if verify.returncode != 0:
        print(f"hie audit verify: {verify.stdout}{verify.stderr}", flush=True)
    return {
        "lost": lost,
        "duplicated": duplicated,
        "projection_equals_rebuild": equal,
        "audit_verifies": verify.returncode == 0,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    partitions = args.partitions if netns.available() else 0
    if args.partitions and not partitions:
        print("partitions left out: network namespaces need root", flush=True)
    root = Path(tempfile.mkdtemp(prefix="hie-faults-"))
    topology = LocalTopology(root, consortium="faults", gateways=2, isolated=partitions > 0)
    try:
        topology.start_servers()
        topology.start_exchange("up", 300)
        tally, stop = Tally(), asyncio.Event()
        members = [
            asyncio.create_task(member(topology, f"thc-{i}", i * 200_000, tally, stop))
            for i in range(args.members)
        ]
        while not tally.batches:  # everyone registered and sending
            await asyncio.sleep(0.5)
        plan = (
            (["kill-nats", "kill-up", "kill-gateway"] * (args.kills // 3 + 1))[: args.kills]
            + ["partition"] * partitions
            + ["failover"] * args.failovers
        )
        random.shuffle(plan)
        started = time.monotonic()
        for n, kind in enumerate(plan, 1):
            await inject(topology, kind, tally)
            print(
                f"[{time.monotonic() - started:6.0f} s] fault {n}/{len(plan)}: {kind}; "
                f"{tally.submissions:,} submissions answered",
                flush=True,
            )
            await asyncio.sleep(args.pause)
        await asyncio.sleep(10)  # a last stretch without faults
        stop.set()
        finishing = asyncio.gather(*members)
        deadline = time.monotonic() + 600
        while not finishing.done():
            await asyncio.wait([finishing], timeout=30)
            late = {c: round(time.monotonic() - t) for c, t in tally.waiting.items()}
            if late:
                print(f"waiting for the receipts of: {late} (s)", flush=True)
            if max(late.values(), default=0) > 120:  # where a stalled member waits
                for task in asyncio.all_tasks():
                    print(f"task {task.get_name()}: {' <- '.join(awaiting(task))}", flush=True)
            if time.monotonic() > deadline:
                raise RuntimeError(f"members still without receipts after 600 s: {late}")
        await finishing
        topology.stop_exchange()
        result = await check(topology, tally)
        by_fault = recovery_times(tally)
        recoveries = [t for _, t in by_fault]
        worst: dict[str, float] = {}
        for kind, t in by_fault:
            worst[kind] = round(max(t, worst.get(kind, 0.0)), 2)
        return {
            "kills": sum(1 for k, _ in tally.faults if k.startswith("kill")),
            "partitions": sum(1 for k, _ in tally.faults if k == "partition"),
            "failovers": sum(1 for k, _ in tally.faults if k == "failover"),
            "submissions": tally.submissions,
            **result,
            "max_recovery_s": round(max(recoveries, default=0.0), 2),
            "median_recovery_s": round(sorted(recoveries)[len(recoveries) // 2], 2)
            if recoveries
            else 0.0,
            "max_recovery_s_by_fault": worst,
            "minutes": round((time.monotonic() - started) / 60, 1),
        }
    finally:
        topology.stop()
        if os.environ.get("HIE_BENCH_KEEP"):
            print(f"kept: {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100, help="process and NATS node kills")
    p.add_argument("--partitions", type=int, default=5)
    p.add_argument("--failovers", type=int, default=3)
    p.add_argument("--members", type=int, default=3, help="institutions sending at once")
    p.add_argument("--pause", type=float, default=2.0, help="seconds between faults")
    return p.parse_args()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    print(json.dumps(asyncio.run(main(parse()))))
