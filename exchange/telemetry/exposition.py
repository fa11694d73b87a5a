"""The metrics of one exchange process and their exposition in Prometheus's text format:
this process's counters, the gateways' (its own and those reporting to the shared
directory, summed) and a snapshot of shared state taken for the scrape."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exchange.telemetry.metrics import GatewayMetrics, ProjectionMetrics, ReadMetrics
from exchange.telemetry.probes import Snapshot, SnapshotCollector
from exchange.telemetry.shared import Summed, forget_the_dead

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Telemetry:
    """Made once per process (a test's exchange has its own, so counts never mix).
    ``shared``: the directory where gateway processes report."""

    def __init__(self, shared: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.reads = ReadMetrics(self.registry)
        self.projection = ProjectionMetrics(self.registry)
        self._gateways = CollectorRegistry()
        self.gateway = GatewayMetrics(self._gateways)
        self.shared = shared

    def forget_the_dead(self) -> None:
        """At the exchange's start: drop what gateways no longer running reported (see
        ``exchange.telemetry.shared``)."""
        if self.shared is not None and self.shared.is_dir():
            forget_the_dead(self.shared)

    def render(self, snapshot: Snapshot | None = None) -> bytes:
        parts: list[Collector] = [self.registry, _Of(Summed(self._gateways, self.shared).collect())]
        if snapshot is not None:
            parts.append(_Of(SnapshotCollector(snapshot).collect()))
        return b"".join(generate_latest(part) for part in parts)


class _Of(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics
