"""The exchange's Prometheus metrics, counted where things happen: in the gateway (each
submission's outcome, its items, how long batches and ledger appends take, how long a
submission waited in JetStream), in the read API's gate (each decision, each break-glass,
each request's time) and in the projection (how long a submission took from the gateway to
the read models; each institution's last submission).

Naming follows Prometheus's guide: an ``hie_`` prefix, base units (seconds), ``_total`` on
counters. Labels have bounded values only — an institution code (authenticated senders
only: anyone can publish to a subject, only registered institutions sign), an item kind, a
problem code, an audit action, a purpose of use from the fixed HL7 list, an outcome — and
never a patient, person, token or request id.

Every count here is a dictionary lookup and an addition under a lock (about a microsecond):
nothing on the submission or read path asks a database or a server for a metric. What is
read from shared state (the ledger's head, the projections' positions, the consumer, the
audit tree) is read when Prometheus scrapes (``exchange.telemetry.probes``).
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from domain.values import PURPOSES

# Seconds: from a millisecond (one batch, one append) to minutes (a backlog).
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The lag a county watches (DESIGN: p99 ≤ 0.1 s at 5,000 events/s), finely around 0.1 s.
_LAG = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds a submission waited at a village clinic's edge node: none, a link's hiccup, hours of
# an outage, days of one.
_DAY = 86400.0
_HELD = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, _DAY / 4, _DAY, 3 * _DAY, 7 * _DAY, 30 * _DAY)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,40}(\.[a-z0-9_]{1,40}){0,3}$")
_PURPOSES = frozenset(PURPOSES)
UNAUTHENTICATED = "unauthenticated"  # a sender that did not prove to be a registered one


def bounded_code(code: str) -> str:
    """A problem code or item kind as a label: ours are short dotted words; anything else
    (which a sender could make up) is counted as ``other``."""
    return code if _CODE.match(code) else "other"


def bounded_purpose(purpose: str | None) -> str:
    """A purpose of use as a label: one of the HL7 codes the exchange knows, ``none`` when
    the request had none, ``other`` for whatever else a caller sent."""
    if purpose is None:
        return "none"
    return purpose if purpose in _PURPOSES else "other"


class _Children:
    """A labelled metric's children by their label values, kept at hand: ``labels()`` takes
    the metric's lock and builds a key on every call."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._known: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._known.get(labels)
        if child is None:
            child = self._known[labels] = self.metric.labels(*labels)
        return child


class GatewayMetrics:
    """What one gateway counts. The same names in every gateway process, summed on the
    exchange's /metrics (``exchange.telemetry.shared``); counters and histograms only, so
    that a sum across processes is the truth."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.submissions = Counter(
            "hie_submissions",
            "Submissions answered, by sender institution and outcome (accepted, repeat: "
            "already in the ledger, rejected)",
            ["institution", "outcome"],
            registry=registry,
        )
        self.items = Counter(
            "hie_submission_items",
            "Items newly accepted into the ledger, by kind",
            ["kind"],
            registry=registry,
        )
        self.problems = Counter(
            "hie_submission_problems",
            "Problems found in rejected submissions, by problem code",
            ["code"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "hie_gateway_redeliveries",
            "Submissions JetStream delivered to a gateway again (after a crash, a nak or an "
            "ack wait ran out)",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "hie_gateway_batch_duration_seconds",
            "Time a gateway took for one fetched batch, from fetch to acknowledgement",
            buckets=_FAST,
            registry=registry,
        )
        self.append_seconds = Histogram(
            "hie_ledger_append_duration_seconds",
            "Time of one ledger append (one transaction of submissions)",
            buckets=_FAST,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "hie_submission_queue_seconds",
            "Time from a submission's publication into JetStream to a gateway taking it "
            "(the first part of the end-to-end lag; hie_projection_lag_seconds is the rest)",
            buckets=_LAG,
            registry=registry,
        )
        self.edge_submissions = Counter(
            "hie_edge_submissions",
            "Submissions a village clinic's edge node relayed, by sender institution and its "
            "clock against the exchange's: in_step, ahead or behind (by more than 5 minutes)",
            ["institution", "clock"],
            registry=registry,
        )
        self.edge_held_seconds = Histogram(
            "hie_edge_held_seconds",
            "Time a submission waited at a clinic's edge node before a gateway received it, "
            "from the edge's stamp (as far as the clocks agree; a clock flagged ahead or behind "
            "is not timed)",
            buckets=_HELD,
            registry=registry,
        )
        self._submissions = _Children(self.submissions)
        self._items = _Children(self.items)
        self._edge = _Children(self.edge_submissions)

    def answered(
        self, institution: str | None, outcome: str, kinds: Sequence[str], problems: Iterable[str]
    ) -> None:
        """One submission answered: ``institution`` None when its sender was not
        authenticated; ``kinds`` the kinds of its items newly accepted."""
        self._submissions(institution or UNAUTHENTICATED, outcome).inc()
        for kind, n in Tally(kinds).items():
            self._items(bounded_code(kind)).inc(n)
        for code in problems:
            self.problems.labels(bounded_code(code)).inc()

    def relayed(self, institution: str, skew: timedelta | None, held: timedelta) -> None:
        """One submission relayed by an (authenticated) institution's edge node: its clock
        flagged ahead or behind (``skew``, negative behind; None in step), and how long it
        waited there (timed only in step: a wrong clock would make the wait wrong)."""
        if skew is None:
            self._edge(institution, "in_step").inc()
            self.edge_held_seconds.observe(held.total_seconds())
        else:
            self._edge(institution, "ahead" if skew > timedelta(0) else "behind").inc()

    def fetched(self, received_at: datetime, messages: Iterable[tuple[datetime, int]]) -> None:
        """A batch taken from JetStream: each message's time of publication (JetStream's
        clock) and delivery count; its wait is timed, a delivery again counted."""
        for at, delivered in messages:
            self.queue_seconds.observe(max(0.0, (received_at - at).total_seconds()))
            if delivered > 1:
                self.redeliveries.inc()


class ReadMetrics:
    """What the read API's gate counts, for every request it decides and audits."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "hie_read_decisions",
            "Requests decided and audited by the read API's gate, by audit action, outcome "
            "(permit, deny) and purpose of use",
            ["action", "outcome", "purpose"],
            registry=registry,
        )
        self.break_glass = Counter(
            "hie_break_glass",
            "Decisions resting on break-glass (a grant issued, a read under one), by action",
            ["action"],
            registry=registry,
        )
        self.seconds = Histogram(
            "hie_http_request_duration_seconds",
            "Time the read API took to answer, by audit action (the route)",
            ["action"],
            buckets=_FAST,
            registry=registry,
        )
        self._decisions = _Children(self.decisions)
        self._seconds = _Children(self.seconds)

    def decided(self, action: str, permit: bool, purpose: str | None, break_glass: bool) -> None:
        self._decisions(action, "permit" if permit else "deny", bounded_purpose(purpose)).inc()
        if break_glass:
            self.break_glass.labels(action).inc()

    def answered(self, action: str, started: float) -> None:
        """A request answered; ``started`` its ``time.perf_counter()`` on arrival."""
        self._seconds(action).observe(time.perf_counter() - started)


class ProjectionMetrics:
    """Watches the patient-record projection commit ledger events: for each accepted
    submission, the time since the gateway received it, and its institution's latest one.

    A submission is timed once, when the projection first applies it in this process, and
    only if it was received after the process started: a rebuild replays events that are
    not late, only old."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "hie_projection_lag_seconds",
            "Time from a gateway receiving a submission to the read models holding it",
            buckets=_LAG,
            registry=registry,
        )
        self.last_submission = Gauge(
            "hie_institution_last_submission_timestamp_seconds",
            "When the newest submission of each institution that the read models hold "
            "reached the exchange (Unix time)",
            ["institution"],
            registry=registry,
        )
        self._started = datetime.now(UTC)
        self._highest = 0  # the highest ledger position timed in this process
        self._latest: dict[str, float] = {}

    def applied(self, events: Sequence[tuple[int, Any]]) -> None:
        now = datetime.now(UTC)
        for position, event in events:
            received = getattr(event, "received_at", None)
            institution = getattr(event, "institution", None)
            if not isinstance(received, datetime) or not isinstance(institution, str):
                continue  # not a submission (an institution registered, a key rotated ...)
            at = received.timestamp()
            if at > self._latest.get(institution, 0.0):
                self._latest[institution] = at
                self.last_submission.labels(institution).set(at)
            if position > self._highest and received >= self._started:
                self.lag.observe(max(0.0, (now - received).total_seconds()))
        if events:
            self._highest = max(self._highest, events[-1][0])
