"""The ingest benchmark's report: the figures of a run as one JSON-ready dict, and the summary
lines printed above it (the last line is that dict as one JSON object)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.ingest_load import quantile


def build_figures(
    args: argparse.Namespace,
    *,
    events: int,
    subs: int,
    institutions: int,
    elapsed: float,
    ledger_limit: float,
    copy_rate: float,
    js_rates: dict[str, float],
    settled: float,
    lags: list[float],
    to_receipt: list[float],
    peak: dict[str, float],
    cpu: dict[str, float],
) -> dict[str, Any]:
    """The run's figures: phase 1's throughput beside the raw ones, phase 2's lag (``lags`` and
    ``to_receipt`` sorted), peak RSS and phase 1's CPU seconds per process."""
    exchange_peak = max(v for k, v in peak.items() if k.startswith("hie"))
    return {
        "events": events,
        "submissions": subs,
        "institutions": institutions,
        "gateways": args.gateways,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "ledger_limit_events_per_s": round(ledger_limit),
        "ratio_to_ledger_limit": round(events / elapsed / ledger_limit, 2),
        "raw_copy_rows_per_s": round(copy_rate),
        "raw_jetstream_publish_events_per_s": round(js_rates["publish_events_per_s"]),
        "raw_jetstream_fetch_ack_events_per_s": round(js_rates["fetch_ack_events_per_s"]),
        "lag_offered_events_per_s": args.rate,
        "autovacuum_waited_s": round(settled, 1),
        "lag_submissions": len(lags),
        "lag_p50_s": round(statistics.median(lags), 4),
        "lag_p99_s": round(quantile(lags, 0.99), 4),
        "lag_max_s": round(lags[-1], 4),
        "receipt_p50_s": round(statistics.median(to_receipt), 4),
        "receipt_p99_s": round(quantile(to_receipt, 0.99), 4),
        "peak_rss_mb": round(exchange_peak, 1),
        "peak_rss_mb_by_process": {k: round(v, 1) for k, v in peak.items()},
        "cpu_s_phase1_by_process": {k: round(v, 1) for k, v in cpu.items()},
        "cores": os.cpu_count(),
    }


def print_report(figures: dict[str, Any]) -> None:
    """The summary lines, then the figures as one JSON object on the last line."""
    print(
        f"end to end: {figures['events_per_s']:,} events/s "
        f"({figures['events']:,} events in {figures['elapsed_s']} s; ledger's own limit "
        f"{figures['ledger_limit_events_per_s']:,}/s, ratio {figures['ratio_to_ledger_limit']})"
    )
    print(
        f"raw: COPY {figures['raw_copy_rows_per_s']:,} rows/s; JetStream publish "
        f"{figures['raw_jetstream_publish_events_per_s']:,} and fetch+ack "
        f"{figures['raw_jetstream_fetch_ack_events_per_s']:,} events/s"
    )
    print(
        f"lag at {figures['lag_offered_events_per_s']:,} events/s offered: p50 "
        f"{figures['lag_p50_s']} s, p99 {figures['lag_p99_s']} s (of which publish → receipt "
        f"p50 {figures['receipt_p50_s']} s, p99 {figures['receipt_p99_s']} s)"
    )
    print(f"peak RSS: {figures['peak_rss_mb_by_process']}")
    print(f"CPU seconds in phase 1: {figures['cpu_s_phase1_by_process']}")
    print(json.dumps(figures, ensure_ascii=False))


def print_errors(log: Path, limit: int = 20) -> None:
    """The ERROR lines of `hie up`'s log (its gateways' included), each with the first line of
    the traceback that follows it: a run that met errors says so beside its figures."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = [
        (line, next((t for t in lines[i + 1 : i + 40] if not t.startswith((" ", "Traceback"))), ""))
        for i, line in enumerate(lines)
        if " ERROR " in line
    ]
    print(f"errors in hie up's log: {len(found)}")
    for line, cause in found[:limit]:
        print(f"  {line}\n    {cause}")
