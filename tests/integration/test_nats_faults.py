"""Faults of the NATS cluster while submissions stream in: the node leading the submit stream
is SIGKILLed (and later started again), or cut off from the other two and the exchange (its
network link down, as a failed switch port) and later healed. Every submission that got an accepted receipt is then
in the ledger exactly once, every sender got its receipt, the projections equal a rebuild and
the audit log verifies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.errors import Error as NatsError

from adapters.nats import SubmitClient
from exchange.servers.nats import stream_name
from exchange.settings import Settings
from tests.factories import visit_batch
from tests.integration.conftest import Running, running
from tests.integration.nats_cluster_fixtures import Cluster, cluster, isolated_cluster, on_cluster
from tests.integration.recovery_checks import (
    assert_audit_verifies,
    assert_each_accepted_once,
    assert_projection_equals_rebuild,
)

__all__ = ["cluster", "isolated_cluster"]

BATCHES = 30
PER_BATCH = 10


class Senders:
    """Institutions sending batch after batch, as adapters do, until each batch has its
    receipt; what was accepted is remembered."""

    def __init__(self, ex: Running, codes: list[str]) -> None:
        self.ex = ex
        self.codes = codes
        self.accepted: set[str] = set()
        self.sent = 0
        self.first_receipt = asyncio.Event()

    async def run_one(self, code: str, offset: int) -> None:
        key = self.ex.keys[code]
        client = SubmitClient(self.ex.rt.nc, self.ex.rt.settings.consortium, code)
        for b in range(BATCHES):
            batch = visit_batch(code, key, offset + b * PER_BATCH, PER_BATCH)
            receipts = await client.submit(batch, wait=15, attempts=8)
            self.sent += len(batch)
            self.accepted |= {s for s, r in receipts.items() if r["status"] == "accepted"}
            assert len(receipts) == len(batch)
            self.first_receipt.set()

    async def run(self) -> None:
        await asyncio.gather(*(self.run_one(c, i * 100_000) for i, c in enumerate(self.codes)))


async def submit_leader(ex: Running) -> str:
    js = ex.rt.nc.jetstream()
    info = await js.stream_info(stream_name(ex.rt.settings.consortium, "SUBMIT"))
    assert info.cluster is not None and info.cluster.leader
    return str(info.cluster.leader)


async def through_a_fault(cluster: Cluster, settings: Settings, fault: str) -> None:
    """Submissions stream in from two institutions; the submit stream's leader suffers
    ``fault`` ("kill" or "cut") until a new leader is elected and a little longer, then comes
    back; everything is checked once the senders are done."""
    async with on_cluster(cluster, settings) as on, running(on) as ex:
        codes = ["thc-f1", "thc-f2"]
        for code in codes:
            await ex.register(code)
        senders = Senders(ex, codes)
        sending = asyncio.create_task(senders.run())
        await asyncio.wait_for(senders.first_receipt.wait(), 30)
        leader = await submit_leader(ex)
        victim = cluster.nats.index_of(leader)
        (cluster.nats.kill if fault == "kill" else cluster.nats.cut)(victim)
        since = time.monotonic()
        try:
            # A new leader is elected among the two left, and sending goes on.
            new_leader = None
            while time.monotonic() - since < 60:
                with contextlib.suppress(Exception):
                    new_leader = await submit_leader(ex)
                    if new_leader != leader:
                        break
                await asyncio.sleep(0.2)
            assert new_leader and new_leader != leader
            await asyncio.sleep(2)
        finally:
            (cluster.nats.start_node if fault == "kill" else cluster.nats.heal)(victim)
        await asyncio.wait_for(sending, 240)
        assert senders.sent == len(codes) * BATCHES * PER_BATCH
        assert len(senders.accepted) == senders.sent
        await ex.settle()
        await assert_each_accepted_once(ex.rt, senders.accepted)
        await assert_audit_verifies(ex.rt)
        # The node that came back catches up and holds the streams again.
        info: Any = None
        for _ in range(300):
            # (a cluster still settling after the heal may leave a request unanswered)
            with contextlib.suppress(TimeoutError, NatsError):
                info = await ex.rt.nc.jetstream().stream_info(
                    stream_name(on.consortium, "RECEIPTS")
                )
                if info.cluster and all(r.current for r in info.cluster.replicas or []):
                    break
            await asyncio.sleep(0.2)
        assert info.cluster and len(info.cluster.replicas or []) == 2
        assert all(r.current for r in info.cluster.replicas or [])
    await assert_projection_equals_rebuild(on)


async def test_the_submit_streams_leader_killed_mid_stream_loses_and_doubles_nothing(
    cluster: Cluster, settings: Settings
) -> None:
    await through_a_fault(cluster, settings, "kill")


async def test_the_submit_streams_leader_cut_off_mid_stream_loses_and_doubles_nothing(
    isolated_cluster: Cluster, settings: Settings
) -> None:
    await through_a_fault(isolated_cluster, settings, "cut")
