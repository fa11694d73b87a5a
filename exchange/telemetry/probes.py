"""What is read from shared state when Prometheus scrapes, or a load balancer asks whether
the exchange is ready: the ledger's head against each projection's position, the gateways'
JetStream consumer, the audit tree and its last signed head, the revocation list's age, the
NATS connection's reconnects, and each village clinic's edge clock as a gateway last measured
it.

These are gauges of state that several processes share (any gateway appends to the ledger,
any process may sign a head), so they are asked of the state itself at scrape time, not
counted in one process; a scrape costs a handful of small queries, none on the hot paths.
Each source is asked with a time limit; one that does not answer is reported down
(``hie_dependency_up``) and its figures left out, never guessed.

Readiness (``/readyz``) is decided from the same snapshot: PostgreSQL and NATS answer, the
read models are at most ``max_behind`` ledger events behind, and the revocation list is
fresh (a stale one refuses every token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from nats.aio.client import Client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from audit.postgres import AuditStore
from exchange.servers.nats import GATEWAY_CONSUMER, stream_name
from projections.intake import EDGE_CLOCKS
from projections.tables import NAME as READ_MODELS

TIMEOUT = 2.0  # seconds a source has to answer a scrape or a readiness check
# A row per institution that sends through an edge node (tens in a county).
_EDGE_CLOCKS = (
    "SELECT institution, CASE WHEN flagged_since IS NULL THEN 0 ELSE ahead_s END AS ahead "
    f"FROM {EDGE_CLOCKS}"
)


class Freshness(Protocol):
    """How long ago the revocation list was last loaded, and how old it may be before every
    token is refused (``exchange.auth.revocations.Revocations``)."""

    stale_after: float

    def age(self) -> float | None: ...


@dataclass
class Snapshot:
    """Shared state at one moment; None (or missing) where its source did not answer."""

    up: dict[str, bool] = field(default_factory=dict)  # postgresql, nats
    ledger: int | None = None
    positions: dict[str, int] = field(default_factory=dict)  # projection name -> position
    consumer: tuple[int, int, int] | None = None  # pending, ack pending, redelivered
    audit_size: int | None = None
    head_age: float | None = None
    revocation_age: float | None = None
    reconnects: int = 0
    # institution -> seconds its edge clock was ahead at the last measurement, 0 in step
    edge_clocks: dict[str, float] = field(default_factory=dict)


class Probes:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        ledger_position: Callable[[], Awaitable[int]],
        nc: Client,
        consortium: str,
        audit: AuditStore,
        revocations: Freshness | None,
        max_behind: int,
    ) -> None:
        self.pool, self.ledger_position, self.nc = pool, ledger_position, nc
        self.consortium, self.audit, self.revocations = consortium, audit, revocations
        self.max_behind = max_behind

    async def snapshot(self) -> Snapshot:
        snap = Snapshot(reconnects=int(self.nc.stats.get("reconnects", 0)))
        database, broker = await asyncio.gather(
            _within(self._database(snap)), _within(self._broker(snap))
        )
        snap.up = {"postgresql": database, "nats": broker}
        if self.revocations is not None:
            snap.revocation_age = self.revocations.age()
        return snap

    async def _database(self, snap: Snapshot) -> None:
        rows = await self.pool.fetch("SELECT name, position FROM projection_position")
        snap.positions = {r["name"]: int(r["position"]) for r in rows}
        snap.ledger = await self.ledger_position()
        snap.audit_size = (await self.audit.tree()).size
        head = await self.audit.last_head()
        if head is not None:
            snap.head_age = max(0.0, (datetime.now(UTC) - head["signed_at"]).total_seconds())
        snap.edge_clocks = {
            r["institution"]: r["ahead"] for r in await self.pool.fetch(_EDGE_CLOCKS)
        }

    async def _broker(self, snap: Snapshot) -> None:
        if not self.nc.is_connected:
            raise ConnectionError("not connected")
        info = await self.nc.jetstream().consumer_info(
            stream_name(self.consortium, "SUBMIT"), GATEWAY_CONSUMER, timeout=TIMEOUT
        )
        snap.consumer = (
            int(info.num_pending or 0),
            int(info.num_ack_pending or 0),
            int(info.num_redelivered or 0),
        )

    def not_ready(self, snap: Snapshot) -> list[str]:
        """What keeps the exchange from serving reads it can stand behind; empty: ready."""
        found = [f"{name}: does not answer" for name, up in snap.up.items() if not up]
        position = snap.positions.get(READ_MODELS)
        if snap.ledger is not None and position is not None:
            behind = snap.ledger - position
            if behind > self.max_behind:
                found.append(
                    f"projection {READ_MODELS}: {behind} ledger events behind "
                    f"(ready at {self.max_behind} or fewer)"
                )
        age, revocations = snap.revocation_age, self.revocations
        if revocations is not None and (age is None or age > revocations.stale_after):
            found.append("revocations: the revocation list is not confirmed; tokens are refused")
        return found


async def _within(step: Awaitable[Any]) -> bool:
    try:
        await asyncio.wait_for(step, TIMEOUT)
    except Exception:
        return False
    return True


class SnapshotCollector:
    """A snapshot as Prometheus metrics (the collector of one scrape)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        up = GaugeMetricFamily(
            "hie_dependency_up",
            "Whether a server the exchange needs answered this scrape (1) or not (0)",
            labels=["dependency"],
        )
        for name, ok in snap.up.items():
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up
        yield CounterMetricFamily(
            "hie_nats_reconnects",
            "Times this process's NATS connection was re-established",
            value=snap.reconnects,
        )
        if snap.ledger is not None:
            yield GaugeMetricFamily(
                "hie_ledger_position", "The ledger's highest position", value=snap.ledger
            )
            position = GaugeMetricFamily(
                "hie_projection_position",
                "The ledger position each projection has applied",
                labels=["projection"],
            )
            behind = GaugeMetricFamily(
                "hie_projection_behind_events",
                "Ledger events each projection has still to apply",
                labels=["projection"],
            )
            for name, at in sorted(snap.positions.items()):
                position.add_metric([name], at)
                behind.add_metric([name], max(0, snap.ledger - at))
            yield position
            yield behind
        if snap.consumer is not None:
            names = ("pending", "ack_pending", "redelivered")
            helps = (
                "Submissions waiting in JetStream for a gateway",
                "Submissions a gateway holds and has not acknowledged yet",
                "Submissions delivered more than once and not acknowledged yet",
            )
            for name, text, count in zip(names, helps, snap.consumer, strict=True):
                yield GaugeMetricFamily(
                    f"hie_gateway_consumer_{name}_messages",
                    f"{text} (the gateways' JetStream consumer)",
                    value=count,
                )
        figures: tuple[tuple[str, str, float | None], ...] = (
            ("hie_audit_tree_size", "Records in the audit log's Merkle tree", snap.audit_size),
            ("hie_audit_head_age_seconds", "Time since the last signed tree head", snap.head_age),
            (
                "hie_revocation_list_age_seconds",
                "Time since this process last loaded the token revocation list",
                snap.revocation_age,
            ),
        )
        for name, text, value in figures:
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)
        if snap.edge_clocks:
            clocks = GaugeMetricFamily(
                "hie_edge_clock_ahead_seconds",
                "How far each institution's edge clock was ahead of the exchange's at its last "
                "relayed submission, when more than 5 minutes (flagged); 0 when in step",
                labels=["institution"],
            )
            for code, ahead in sorted(snap.edge_clocks.items()):
                clocks.add_metric([code], ahead)
            yield clocks
