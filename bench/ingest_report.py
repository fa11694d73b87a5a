"""The ingest benchmark's report: the figures of a run as one JSON-ready dict, and the summary
lines printed above it (the last line is that dict as one JSON object)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bench import logs


def build_figures(
    args: argparse.Namespace,
    *,
    topology: str,
    events: int,
    subs: int,
    institutions: int,
    elapsed: float,
    raw: dict[str, Any],
    began: float | None,
    settled: float,
    during: dict[str, Any],
    after: dict[str, Any],
    stored: dict[str, int],
    autovacuum: dict[str, Any],
    peak: dict[str, float],
    cpu: dict[str, float],
) -> dict[str, Any]:
    """One topology's figures: phase 1's throughput beside the raw ones, the fixed-rate
    windows during autovacuum and after it (the flat ``lag_*``/``receipt_*`` keys are the
    window after it, as they were before the window during it was measured), the bytes
    stored, peak RSS and phase 1's CPU seconds per process."""
    exchange_peak = max(v for k, v in peak.items() if k.startswith("hie"))
    ledger_limit, js_rates = raw["ledger_limit"], raw["js_rates"]
    return {
        "topology": topology,
        "events": events,
        "submissions": subs,
        "institutions": institutions,
        "gateways": args.gateways,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "ledger_limit_events_per_s": round(ledger_limit),
        "ratio_to_ledger_limit": round(events / elapsed / ledger_limit, 2),
        "raw_copy_rows_per_s": round(raw["copy_rate"]),
        "raw_jetstream_publish_events_per_s": round(js_rates["publish_events_per_s"]),
        "raw_jetstream_fetch_ack_events_per_s": round(js_rates["fetch_ack_events_per_s"]),
        "lag_offered_events_per_s": args.rate,
        "autovacuum_began_s": None if began is None else round(began, 1),
        "autovacuum_waited_s": round(settled, 1),
        **{k: v for k, v in after.items() if k.startswith(("lag_", "receipt_"))},
        "lag_during_autovacuum_p99_s": during["lag_p99_s"],
        "lag_during_autovacuum": during,
        "lag_after_autovacuum": after,
        **autovacuum,
        **stored,
        "database_bytes_per_event": round(stored["database_bytes"] / stored["stored_events"]),
        "peak_rss_mb": round(exchange_peak, 1),
        "peak_rss_mb_by_process": {k: round(v, 1) for k, v in peak.items()},
        "cpu_s_phase1_by_process": {k: round(v, 1) for k, v in cpu.items()},
        "cores": os.cpu_count(),
    }


def with_cluster(single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """The single node's figures (its keys as they were) with the cluster's beside them, and
    the cost of replication as cluster ÷ single node."""

    def ratio(key: str, group: str | None = None) -> float:
        a = single[group][key] if group else single[key]
        b = cluster[group][key] if group else cluster[key]
        return round(b / a, 2) if a else float("nan")

    return single | {
        "local_cluster": cluster,
        "cluster_ratios": {
            "events_per_s": ratio("events_per_s"),
            "ledger_limit_events_per_s": ratio("ledger_limit_events_per_s"),
            "raw_copy_rows_per_s": ratio("raw_copy_rows_per_s"),
            "raw_jetstream_publish_events_per_s": ratio("raw_jetstream_publish_events_per_s"),
            "lag_p50_s": ratio("lag_p50_s"),
            "lag_p99_s": ratio("lag_p99_s"),
            "lag_during_autovacuum_p99_s": ratio("lag_during_autovacuum_p99_s"),
            "receipt_p99_s": ratio("receipt_p99_s"),
        },
    }


def window_line(name: str, w: dict[str, Any]) -> str:
    """One fixed-rate window: lag, its split, what autovacuum did and who waited for it, the
    machine meanwhile."""
    tables = ", ".join(f"{t} {s:g} s" for t, s in w["autovacuum_s_by_table"].items())
    stalls = ", ".join(
        f"{k.removeprefix('stall_').removesuffix('_share').replace('_', ' ')} {v:.0%}"
        for k, v in w.items()
        if k.startswith("stall_")
    )
    behind = ", ".join(
        f"{t} {s:g} s" for t, s in w["lock_wait_behind_autovacuum_s_by_relation"].items()
    )
    at_work = (
        f"{w['lag_submissions_autovacuum_at_work']} submissions with a worker at work: p99 "
        f"{w['lag_p99_s_autovacuum_at_work']} s, max {w['lag_max_s_autovacuum_at_work']} s; "
        f"the others p99 {w['lag_p99_s_autovacuum_idle']} s"
    )
    return (
        f"  {name}: p50 {w['lag_p50_s']} s, p99 {w['lag_p99_s']} s, max {w['lag_max_s']} s "
        f"(publish → receipt p99 {w['receipt_p99_s']} s, receipt → visible p99 "
        f"{w['receipt_to_visible_p99_s']} s)\n"
        f"    autovacuum busy {w['autovacuum_busy_s']:g} of {w['window_s']:g} s"
        + (f" ({tables}; {w['autovacuum_cpu_s']:g} s CPU, " if tables else " (")
        + f"{w['autovacuum_read_mb']:g} MB read, {w['autovacuum_written_mb']:g} MB written); "
        f"{at_work}\n"
        f"    lock waits (backend-s): {w['lock_wait_s_by_relation'] or 'none'}"
        + (f", behind autovacuum: {behind}" if behind else "")
        + f"; checkpointer {w['checkpointer_s_by_wait'] or 'idle'}"
        + f"; WAL {w['wal_mb']} MB ({w['wal_full_page_images']} full pages)"
        + f"; machine busy {w['machine_busy_share']:.0%} ({w['others_cpu_s']:g} CPU-s of it "
        "not this run's)"
        + (f", stalled: {stalls}" if stalls else "")
        + f"\n    statements (backend-s by wait): {w['statements_s_by_wait']}"
        + (
            f"; running over 0.5 s: {w['statements_over_half_a_second']}"
            if w["statements_over_half_a_second"]
            else ""
        )
        + f"\n    CPU s: {w['cpu_s_by_process']}; slowest published at "
        f"{w['slowest_published_at_s']} s into the window"
    )


def print_topology(f: dict[str, Any]) -> None:
    print(f"== {f['topology']}")
    print(
        f"end to end: {f['events_per_s']:,} events/s "
        f"({f['events']:,} events in {f['elapsed_s']} s; ledger's own limit "
        f"{f['ledger_limit_events_per_s']:,}/s, ratio {f['ratio_to_ledger_limit']})"
    )
    print(
        f"raw: COPY {f['raw_copy_rows_per_s']:,} rows/s; JetStream publish "
        f"{f['raw_jetstream_publish_events_per_s']:,} and fetch+ack "
        f"{f['raw_jetstream_fetch_ack_events_per_s']:,} events/s"
    )
    began = f["autovacuum_began_s"]
    print(
        f"lag at {f['lag_offered_events_per_s']:,} events/s offered: first window "
        + ("(no autovacuum began before it) " if began is None else f"{began} s after phase 1, ")
        + f"second {f['autovacuum_waited_s']} s after the first, once autovacuum was over"
    )
    print(window_line("during autovacuum", f["lag_during_autovacuum"]))
    print(window_line("after autovacuum ", f["lag_after_autovacuum"]))
    marks = ", ".join(f"{k} {v:g}" for k, v in f["timeline_marks_s"].items())
    print(f"autovacuum from the start of phase 1 (s; {marks}):")
    print("  " + ("; ".join(f["autovacuum_timeline"]) or "none"))
    print(
        f"stored: {f['database_bytes'] / 2**20:,.0f} MB database "
        f"({f['database_bytes_per_event']:,} bytes per event), "
        f"{f['jetstream_bytes'] / 2**20:,.1f} MB in streams"
    )
    print(f"peak RSS: {f['peak_rss_mb_by_process']}")
    print(f"CPU seconds in phase 1: {f['cpu_s_phase1_by_process']}")


def print_report(figures: dict[str, Any]) -> None:
    """The cluster's ratios (each topology's lines were printed as it finished), then the
    figures as one JSON object on the last line."""
    if "local_cluster" in figures:
        print(
            "cost of replication (3-node R3 cluster, synchronous standby ÷ single node): "
            + ", ".join(f"{k} × {v}" for k, v in figures["cluster_ratios"].items())
        )
    print(json.dumps(figures, ensure_ascii=False))


def print_errors(log: Path, limit: int = 20) -> None:
    """The ERROR records of `hie up`'s log (its gateways' included), each with the last line
    of its traceback, and its WARNINGs by kind: a run that met errors says so beside its
    figures."""
    errors = logs.at_level(log, "ERROR")
    print(f"errors in hie up's log: {len(errors)}")
    for record in errors[:limit]:
        print(f"  {logs.line_of(record)}")
    if warnings := logs.warnings_by_kind(log):
        print(f"warnings in hie up's log: {warnings}")
        for record in logs.at_level(log, "WARNING")[:limit]:
            print(f"  {logs.line_of(record)}")
