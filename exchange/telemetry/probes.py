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
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from nats.aio.client import Client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from audit.postgres import AuditStore
from exchange.servers.edge import down_consumer, edge_of_api
from exchange.servers.nats import GATEWAY_CONSUMER, stream_name
from projections.intake import EDGE_CLOCKS
from projections.tables import NAME as READ_MODELS

TIMEOUT = 2.0  # seconds a source has to answer a scrape or a readiness check
# An edge node's link is taken for down when the hub has not heard from it for this long
# (its consumer's heartbeat comes every second while the link is up).
EDGE_SILENT = 10.0


@dataclass(frozen=True)
class EdgeLink:
    """What the hub knows of a village clinic's edge node (issue 16): when it last heard from
    it and what the edge then said it held, and the clinic's receipts on their way down.
    How old the edge's oldest submission is only the edge knows (`hie edge status`)."""

    heard_s: float | None  # seconds since the hub's source last heard from it; None: never
    queued: int | None  # submissions the edge held for the exchange at that moment
    receipts_waiting: int | None  # receipts not yet taken down to the edge
    last_receipt_at: datetime | None  # when the edge last took one down


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
    edges: dict[str, EdgeLink] = field(default_factory=dict)


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
        snap.edges = await self._edges()

    async def _edges(self) -> dict[str, EdgeLink]:
        """Each edge node the submit stream sources from: its source's state, read from the
        server's own answer (the client library's reading of it drops which edge a source
        is), and its receipts consumer's."""
        submit = stream_name(self.consortium, "SUBMIT")
        answer = await self.nc.request(f"$JS.API.STREAM.INFO.{submit}", b"", timeout=TIMEOUT)
        sources = {
            code: source
            for source in json.loads(answer.data).get("sources") or []
            if (code := edge_of_api(str((source.get("external") or {}).get("api", ""))))
        }
        if not sources:
            return {}
        js, receipts = self.nc.jetstream(), stream_name(self.consortium, "RECEIPTS")
        consumers: dict[str, Any] = {}
        while page := await js.consumers_info(receipts, offset=len(consumers)):
            consumers.update({c.name: c for c in page})
            if len(page) < 256:  # the server's page: a shorter one is the last
                break
        edges = {}
        for code, source in sources.items():
            active = source.get("active")
            down = consumers.get(down_consumer(code, "rcpt"))
            floor = down.ack_floor if down is not None else None
            edges[code] = EdgeLink(
                heard_s=active / 1e9 if isinstance(active, int) and active >= 0 else None,
                queued=source.get("lag") if isinstance(source.get("lag"), int) else None,
                receipts_waiting=int(down.num_pending or 0) + int(down.num_ack_pending or 0)
                if down is not None
                else None,
                last_receipt_at=floor.last_active if floor is not None else None,
            )
        return edges

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
                "relayed submission, when more than 5 minutes off (flagged; negative: behind); "
                "0 when in step",
                labels=["institution"],
            )
            for code, ahead in sorted(snap.edge_clocks.items()):
                clocks.add_metric([code], ahead)
            yield clocks
        if snap.edges:
            yield from _edge_metrics(snap.edges)


def _edge_metrics(edges: dict[str, EdgeLink]) -> Iterator[Metric]:
    """Each village clinic's edge node as the hub sees it: one series per institution."""
    described = {
        "up": (
            "hie_edge_link_up",
            f"Whether the hub heard from the institution's edge node in the last "
            f"{EDGE_SILENT:.0f} seconds (1) or not (0)",
        ),
        "heard": (
            "hie_edge_last_heard_seconds",
            "Time since the hub last heard from the institution's edge node",
        ),
        "queued": (
            "hie_edge_queued_messages",
            "Submissions the institution's edge node held for the exchange when last heard",
        ),
        "waiting": (
            "hie_edge_receipts_waiting_messages",
            "The institution's receipts not yet taken down to its edge node",
        ),
        "receipt": (
            "hie_edge_last_receipt_timestamp_seconds",
            "When the institution's edge node last took a receipt down (Unix time)",
        ),
    }
    families = {
        key: GaugeMetricFamily(name, text, labels=["institution"])
        for key, (name, text) in described.items()
    }
    for code, link in sorted(edges.items()):
        up = link.heard_s is not None and link.heard_s < EDGE_SILENT
        families["up"].add_metric([code], 1.0 if up else 0.0)
        if link.heard_s is not None:
            families["heard"].add_metric([code], link.heard_s)
        if link.queued is not None:
            families["queued"].add_metric([code], link.queued)
        if link.receipts_waiting is not None:
            families["waiting"].add_metric([code], link.receipts_waiting)
        if link.last_receipt_at is not None:
            families["receipt"].add_metric([code], link.last_receipt_at.timestamp())
    yield from families.values()
