"""The telemetry's pure parts: JSON log lines that hold no exception message but our coded
errors', label values bounded whatever a caller sends, the projection's lag timed once and
never for a replay, gateway counts summed across processes, and readiness decided from a
snapshot of shared state."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from domain.errors import InvalidResidentId
from exchange.telemetry import logs
from exchange.telemetry.exposition import Telemetry
from exchange.telemetry.metrics import GatewayMetrics, bounded_code, bounded_purpose
from exchange.telemetry.probes import EdgeLink, Probes, Snapshot, SnapshotCollector
from exchange.telemetry.shared import ENVIRONMENT, Summed, forget_the_dead

SECRET = "110105195803140012 李建国"


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """The root logger's JSON lines, into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("INFO")
    sink = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(sink)
    yield sink
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_a_log_line_is_json_with_the_request_id_of_the_request_served(
    logged: io.StringIO,
) -> None:
    log = logging.getLogger("exchange.test")
    log.info("outside any request")
    token = logs.REQUEST_ID.set("req-1")
    try:
        log.warning("inside one", extra={"institution": "thc-east"})
    finally:
        logs.REQUEST_ID.reset(token)
    outside, inside = lines(logged)
    assert outside["message"] == "outside any request" and "request_id" not in outside
    assert inside["request_id"] == "req-1" and inside["institution"] == "thc-east"
    assert inside["level"] == "WARNING" and inside["logger"] == "exchange.test"
    assert datetime.fromisoformat(inside["time"]).tzinfo is not None


def test_an_exception_is_logged_without_its_message_unless_it_is_one_of_ours(
    logged: io.StringIO,
) -> None:
    log = logging.getLogger("exchange.test")
    try:
        try:
            raise ValueError(f"input value {SECRET} is not valid")  # as pydantic would say
        except ValueError as exc:
            raise KeyError(SECRET) from exc
    except KeyError:
        log.exception("request failed")
    try:
        raise InvalidResidentId("a resident ID has 18 characters")
    except InvalidResidentId:
        log.exception("refused")
    theirs, ours = lines(logged)
    assert "builtins.ValueError" in theirs["exc_info"] and "builtins.KeyError" in theirs["exc_info"]
    assert "test_telemetry.py" in theirs["exc_info"]  # where it happened is kept
    assert "李建国" not in json.dumps(theirs, ensure_ascii=False)
    assert "110105195803140012" not in json.dumps(theirs)
    assert "a resident ID has 18 characters" in ours["exc_info"]


def test_warnings_come_out_as_json_lines_too(logged: io.StringIO) -> None:
    import warnings

    warnings.warn("old call", DeprecationWarning, stacklevel=1)
    [line] = lines(logged)
    assert line["logger"] == "py.warnings" and "old call" in line["message"]


def test_lines_go_to_stderr_as_it_is_when_they_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Configured while one stderr was in place (a test's capture, since closed), the lines
    go to the one in place when they are written, and nothing fails."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", first)
        logs.configure("INFO")
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        logging.getLogger("hie.test").info("after the swap")
        assert json.loads(second.getvalue())["message"] == "after the swap"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


def test_label_values_are_bounded_whatever_a_caller_sends() -> None:
    assert bounded_purpose("TREAT") == "TREAT"
    assert bounded_purpose(None) == "none"
    assert bounded_purpose("110105195803140012") == "other"
    assert bounded_code("signature.invalid") == "signature.invalid"
    assert bounded_code("string_too_short") == "string_too_short"
    assert bounded_code("Item 李建国") == "other"
    assert bounded_code("a." * 40) == "other"


def accepted(position: int, received: datetime, institution: str = "thc-east") -> Any:
    return position, SimpleNamespace(institution=institution, received_at=received)


def figure(text: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_the_projection_times_a_submission_once_and_never_a_replay() -> None:
    telemetry = Telemetry()
    now = datetime.now(UTC)
    # Two new submissions, and an institution registered (no submission).
    telemetry.projection.applied(
        [accepted(1, now), (2, SimpleNamespace(code="x")), accepted(3, now, "county")]
    )
    # Then a rebuild replays them, and one received before this process started comes.
    telemetry.projection.applied([accepted(1, now), accepted(3, now, "county")])
    telemetry.projection.applied([accepted(4, now - timedelta(days=1))])
    text = telemetry.render()
    assert figure(text, "hie_projection_lag_seconds_count") == 2
    assert figure(
        text, "hie_institution_last_submission_timestamp_seconds", institution="county"
    ) == pytest.approx(now.timestamp())


@pytest.fixture
def other_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Metrics made while this fixture holds are kept as another process (pid 4194301, above
    any real one) keeps them in the shared directory."""
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4194301))
    yield tmp_path  # the monkeypatch then restores the value class of this process


def test_the_gateways_counts_are_summed_across_processes(other_process: Path) -> None:
    # A gateway in another process counts two accepted submissions and a slow batch ...
    theirs = GatewayMetrics(CollectorRegistry())
    theirs.answered("thc-east", "accepted", ["observation"], [])
    theirs.answered("thc-east", "accepted", ["observation", "condition"], [])
    theirs.batch_seconds.observe(3.0)
    # ... and this process's own gateway one more and a quick batch.
    values.ValueClass = values.MutexValue  # (as this process keeps them)
    own = CollectorRegistry()
    ours = GatewayMetrics(own)
    ours.answered("thc-east", "accepted", ["observation"], [])
    ours.answered(None, "rejected", [], ["signature.invalid"])
    ours.batch_seconds.observe(0.004)
    text = generate_latest(Summed(own, other_process))  # type: ignore[arg-type]
    sub = "hie_submissions_total"
    assert figure(text, sub, institution="thc-east", outcome="accepted") == 3
    assert figure(text, sub, institution="unauthenticated", outcome="rejected") == 1
    assert figure(text, "hie_submission_items_total", kind="observation") == 3
    assert figure(text, "hie_gateway_batch_duration_seconds_count") == 2
    assert figure(text, "hie_gateway_batch_duration_seconds_bucket", le="0.005") == 1
    assert figure(text, "hie_gateway_batch_duration_seconds_bucket", le="5.0") == 2
    # Each family once (Prometheus refuses a family named twice).
    helps = [line for line in text.decode().splitlines() if line.startswith("# HELP")]
    assert len(helps) == len(set(helps))
    # When `hie up` starts again, what dead processes reported is dropped; the living stay.
    mine = other_process / f"counter_{os.getpid()}.db"
    mine.write_bytes(b"")
    forget_the_dead(other_process)
    assert [p.name for p in other_process.glob("*.db")] == [mine.name]


def probes(max_behind: int, revocations: Any = None) -> Probes:
    unused: Any = None
    return Probes(
        pool=unused,
        ledger_position=unused,
        nc=unused,
        consortium="t",
        audit=unused,
        revocations=revocations,
        max_behind=max_behind,
    )


def test_ready_means_servers_answer_read_models_keep_up_and_revocations_are_fresh() -> None:
    fresh = SimpleNamespace(stale_after=10.0)
    up = {"postgresql": True, "nats": True}
    caught_up = Snapshot(up=up, ledger=100, positions={"patient_record": 95}, revocation_age=1)
    assert probes(5, fresh).not_ready(caught_up) == []
    # The notifier's position is not the read models'.
    notifier = Snapshot(
        up=up, ledger=100, positions={"patient_record": 100, "referral_notifier": 1}
    )
    assert probes(5).not_ready(notifier) == []
    behind = probes(4, fresh).not_ready(caught_up)
    assert behind == ["projection patient_record: 5 ledger events behind (ready at 4 or fewer)"]
    stale = Snapshot(up=up, ledger=1, positions={"patient_record": 1}, revocation_age=11)
    assert probes(5, fresh).not_ready(stale) == [
        "revocations: the revocation list is not confirmed; tokens are refused"
    ]
    down = Snapshot(up={"postgresql": False, "nats": True})
    assert probes(5).not_ready(down) == ["postgresql: does not answer"]


def test_edge_relayed_submissions_are_counted_by_clock_and_their_wait_timed(
    other_process: Path,
) -> None:
    # Another gateway process: a clinic's submission that waited three days at its edge ...
    theirs = GatewayMetrics(CollectorRegistry())
    theirs.relayed("vc-peach", None, timedelta(days=3))
    # ... and this one: one that came at once, and one each from a clock flagged ahead and one
    # flagged behind (neither timed).
    values.ValueClass = values.MutexValue
    own = CollectorRegistry()
    ours = GatewayMetrics(own)
    ours.relayed("vc-peach", None, timedelta(seconds=0.2))
    ours.relayed("vc-plum", timedelta(hours=1), timedelta(0))
    ours.relayed("vc-pear", timedelta(minutes=-20), timedelta(minutes=20))
    text = generate_latest(Summed(own, other_process))  # type: ignore[arg-type]
    edge = "hie_edge_submissions_total"
    assert figure(text, edge, institution="vc-peach", clock="in_step") == 2
    assert figure(text, edge, institution="vc-plum", clock="ahead") == 1
    assert figure(text, edge, institution="vc-pear", clock="behind") == 1
    assert figure(text, "hie_edge_held_seconds_count") == 2
    assert figure(text, "hie_edge_held_seconds_bucket", le="1.0") == 1
    assert figure(text, "hie_edge_held_seconds_bucket", le="86400.0") == 1
    assert figure(text, "hie_edge_held_seconds_bucket", le="259200.0") == 2


def scraped(snap: Snapshot) -> bytes:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


def test_each_edge_clock_is_a_gauge_of_seconds_ahead_when_flagged() -> None:
    text = scraped(Snapshot(edge_clocks={"vc-plum": 3600.5, "vc-peach": 0.0}))
    name = "hie_edge_clock_ahead_seconds"
    assert figure(text, name, institution="vc-plum") == 3600.5
    assert (name, "vc-peach") in {
        (s.name, s.labels.get("institution"))
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }
    # No measurement yet: no family at all, rather than a gauge that says "in step".
    assert name.encode() not in scraped(Snapshot())


def test_each_edge_node_is_seen_from_the_hub_by_its_link_queue_and_receipts() -> None:
    took = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    text = scraped(
        Snapshot(
            edges={
                "vc-plum": EdgeLink(0.4, 0, 0, took),
                "vc-peach": EdgeLink(3 * 86400.0, 37, 12, None),
                "vc-pear": EdgeLink(None, None, None, None),  # made known, never linked
            }
        )
    )
    up = "hie_edge_link_up"
    assert [figure(text, up, institution=c) for c in ("vc-plum", "vc-peach", "vc-pear")] == [
        1.0,
        0.0,
        0.0,
    ]
    assert figure(text, "hie_edge_last_heard_seconds", institution="vc-peach") == 3 * 86400.0
    assert figure(text, "hie_edge_queued_messages", institution="vc-peach") == 37
    assert figure(text, "hie_edge_receipts_waiting_messages", institution="vc-peach") == 12
    assert (
        figure(text, "hie_edge_last_receipt_timestamp_seconds", institution="vc-plum")
        == took.timestamp()
    )
    named = {
        (s.name, s.labels.get("institution"))
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }
    assert ("hie_edge_last_heard_seconds", "vc-pear") not in named  # never: no figure
    assert not any(n.startswith("hie_edge_link") for n, _ in named if _ is None)
