"""The ingest benchmark's load and what it watches: institutions publishing their envelopes
(each in its own process), receipts counted, the projection followed until every submission
is visible, a fixed offered rate with its lag per submission, and the RSS and CPU of every
process of the exchange."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import psutil

from bench.ingest_county import read_envelopes, submission_id
from bench.ingest_topology import NatsTarget


async def publish_all(
    target: NatsTarget, subject: str, envelopes: list[bytes], window: int = 64
) -> None:
    nc = await target.connect("publisher")
    js = nc.jetstream()
    sem = asyncio.Semaphore(window)

    async def one(data: bytes) -> None:
        sid = submission_id(data)
        try:
            for _ in range(20):  # bounded: a lost ack is retried with the same id (de-duplicated)
                try:
                    await js.publish(subject, data, headers={"Nats-Msg-Id": sid}, timeout=30)
                    return
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
            raise RuntimeError("publish kept timing out")
        finally:
            sem.release()

    tasks = []
    for data in envelopes:
        await sem.acquire()
        tasks.append(asyncio.create_task(one(data)))
    await asyncio.gather(*tasks)
    await nc.drain()


def publisher_main(args: argparse.Namespace) -> None:
    """A child process: one institution publishing its file as fast as JetStream takes it."""
    envelopes = read_envelopes(Path(args.publisher))
    target = NatsTarget(
        args.nats_url,
        Path(args.nats_creds) if args.nats_creds else None,
        Path(args.nats_ca) if args.nats_ca else None,
    )
    asyncio.run(publish_all(target, args.subject, envelopes))


class Rss:
    """Peak RSS per process of the exchange (and, for the record, the servers)."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.peak: dict[str, float] = dict.fromkeys(procs, 0.0)

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass


def cpu_seconds(proc: psutil.Process, children: bool) -> float:
    """User + system CPU of a process and of the children it has reaped (`hie up`'s replay
    workers once a replay is over), with its live children's if asked (PostgreSQL's
    backends; not `hie up`'s gateways, which are counted on their own)."""
    total = 0.0
    for p in [proc, *(proc.children(recursive=True) if children else [])]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
            if p is proc:
                total += times.children_user + times.children_system
        except psutil.Error:
            pass
    return total


class Receipts:
    """Counts the receipts of phase 1 (a core NATS subscription: cheap, and it asks the
    database nothing while the exchange works)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.other: list[dict[str, Any]] = []
        self.all_in = asyncio.Event()
        self.expected = 0

    async def on_msg(self, msg: Any) -> None:
        receipt = json.loads(msg.data)
        if receipt.get("status") == "accepted" and not receipt.get("repeat"):
            self.accepted += 1
        elif receipt.get("status") != "accepted":
            self.other.append(receipt)
        if self.accepted >= self.expected:
            self.all_in.set()

    def refusals(self) -> str:
        """The problem codes of the receipts that were not acceptances, counted (codes only:
        a problem's message may quote what was sent)."""
        codes = Counter(p.get("code", "?") for r in self.other for p in r.get("problems") or [{}])
        return ", ".join(f"{code} × {n}" for code, n in codes.most_common()) or "none"


async def wait_visible(pool: asyncpg.Pool, receipts: Receipts, timeout: float) -> float:
    """Wait until every submission is accepted into the ledger and the projection has
    applied the ledger up to its last position."""
    try:
        await asyncio.wait_for(receipts.all_in.wait(), timeout)
    except TimeoutError:
        raise RuntimeError(
            f"only {receipts.accepted} submissions were accepted in time; "
            f"the others' problems: {receipts.refusals()}"
        ) from None
    end = await pool.fetchval("SELECT max(notification_id) FROM ledger_events")
    await wait_position(pool, end, timeout, every=0.005)
    return time.monotonic()


async def wait_position(pool: asyncpg.Pool, end: int, timeout: float, every: float = 0.02) -> None:
    """Wait until the projection has applied the ledger up to position ``end``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            await pool.fetchval(
                "SELECT position FROM projection_position WHERE name = 'patient_record'"
            )
            >= end
        ):
            return
        await asyncio.sleep(every)
    raise RuntimeError("the projection did not catch up in time")


async def fixed_rate(
    target: NatsTarget,
    consortium: str,
    pool: asyncpg.Pool,
    envelopes: dict[str, list[bytes]],
    rate: float,
    seconds: float,
    per_submission: int,
    times: list[tuple[float, float, float]] | None = None,
) -> tuple[list[float], list[float]]:
    """Offer ``rate`` events/s for ``seconds``; per submission, publish → visible seconds,
    and publish → receipt (the gateway's share of it), both sorted; each submission's
    (published, receipted, visible) monotonic times into ``times`` if given."""
    nc = await target.connect("fixed rate")
    js = nc.jetstream()
    published: dict[str, float] = {}
    positions: dict[str, int] = {}
    receipted: dict[str, float] = {}
    got_all = asyncio.Event()

    async def on_receipt(msg: Any) -> None:
        receipt = json.loads(msg.data)
        if receipt.get("status") == "accepted" and receipt["submission_id"] in published:
            receipted[receipt["submission_id"]] = time.monotonic()
            positions[receipt["submission_id"]] = receipt["positions"][0]
            if len(positions) == total:
                got_all.set()

    await nc.subscribe(f"hie.{consortium}.receipt.*", cb=on_receipt)
    order = [
        (inst, data)
        for group in zip(*envelopes.values(), strict=False)
        for inst, data in zip(envelopes, group, strict=True)
    ]
    total = min(len(order), int(rate * seconds / per_submission))
    order = order[:total]
    visible: dict[str, float] = {}
    done = asyncio.Event()

    def moved(at: int, now: float) -> None:
        for sid, pos in list(positions.items()):
            if sid not in visible and pos <= at:
                visible[sid] = now
        if len(visible) == total:
            done.set()

    watcher = asyncio.create_task(follow_projection(pool, moved, done))
    interval = per_submission / rate
    start = time.monotonic()
    for i, (inst, data) in enumerate(order):
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        sid = submission_id(data)
        published[sid] = time.monotonic()
        await js.publish(
            f"hie.{consortium}.submit.{inst}", data, headers={"Nats-Msg-Id": sid}, timeout=30
        )
    await asyncio.wait_for(got_all.wait(), 120)
    await asyncio.wait_for(done.wait(), 120)
    await watcher
    await nc.close()
    if times is not None:
        times += [(published[s], receipted[s], visible[s]) for s in visible]
    return (
        sorted(visible[s] - published[s] for s in visible),
        sorted(receipted[s] - published[s] for s in receipted),
    )


# The projection's position, told as it commits: a trigger the benchmark adds to the
# exchange's database for the window (its cost, a pg_notify per projection commit, is inside
# what it measures). Polling for it every 2 ms instead cost PostgreSQL (with the autovacuum
# sampler's queries) about 5% of a core, in the very windows whose lag follows how busy the
# machine is.
_POSITION_CHANNEL = "bench_projection_position"
_POSITION_TRIGGER = f"""
CREATE OR REPLACE FUNCTION bench_projection_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{_POSITION_CHANNEL}', NEW.position::text);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER bench_projection_position
    AFTER INSERT OR UPDATE ON projection_position FOR EACH ROW
    WHEN (NEW.name = 'patient_record') EXECUTE FUNCTION bench_projection_position();
"""


async def follow_projection(
    pool: asyncpg.Pool, moved: Callable[[int, float], None], done: asyncio.Event
) -> None:
    """Call ``moved(position, monotonic time)`` each time the projection commits, until
    ``done``. Told by a trigger's notification; read again every 0.2 s as well (a time read
    then is late, never early), and every 2 ms where the trigger cannot be made."""
    async with pool.acquire() as conn:
        try:
            await conn.execute(_POSITION_TRIGGER)
            told = True
        except asyncpg.PostgresError as exc:
            print(f"  (cannot follow the projection by notification: {exc}; polling)", flush=True)
            told = False

        def on_position(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            moved(int(payload), time.monotonic())

        if told:
            await conn.add_listener(_POSITION_CHANNEL, on_position)
        try:
            while not done.is_set():
                at = await conn.fetchval(
                    "SELECT position FROM projection_position WHERE name = 'patient_record'"
                )
                moved(at, time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.2 if told else 0.002)
        finally:
            if told:
                await conn.remove_listener(_POSITION_CHANNEL, on_position)
                await conn.execute(
                    "DROP TRIGGER IF EXISTS bench_projection_position ON projection_position"
                )


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
