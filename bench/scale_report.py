"""The scale benchmark's report: a table of every step, the growth ratios (the value at the
largest step over the value at the smallest) against the goals, the machine's raw figures,
and the whole as one JSON object on the last line."""

from __future__ import annotations

import json
import os
from typing import Any

from bench.scale_watch import SHARED_INCLUDED

# Goals on two cores, one run: (figure, bound, which way).
GOALS = [
    ("read_p99_growth", 1.2, "≤"),
    ("read_peak_growth", 0.8, "≥"),
    ("ingest_growth", 0.9, "≥"),
    ("rebuild_events_per_s", 30_000, "≥"),
    ("peak_rss_mb", 300, "≤"),
]
COLUMNS = [  # heading, figure
    ("step", lambda s: f"{s['step_millions']:g}M"),
    ("residents", lambda s: f"{s['residents']:,}"),
    ("ledger ev", lambda s: f"{s['ledger_events']:,}"),
    ("growth/s", lambda s: f"{s.get('growth_events_per_s', 0):,}"),
    ("batch/s", lambda s: f"{s['ingest_events_per_s']:,}"),
    ("lag99 av", lambda s: f"{s['lag_during']['lag_p99_s']}"),
    ("lag99", lambda s: f"{s['lag_after']['lag_p99_s']}"),
    ("read p50", lambda s: f"{s['read_p50_ms']}"),
    ("read p99", lambda s: f"{s['read_p99_ms']}"),
    ("peak/s", lambda s: f"{s['read_peak_rps']}"),
    ("lookup99", lambda s: f"{s['lookup_p99_ms']}"),
    ("verify s", lambda s: f"{s['audit_verify_s']}"),
    ("rebuild/s", lambda s: f"{s['rebuild_events_per_s']:,}"),
    ("DB MB/M", lambda s: f"{s['database_bytes_per_million_events'] / 2**20:,.0f}"),
    ("JS MB/M", lambda s: f"{s['jetstream_bytes_per_million_events'] / 2**20:,.1f}"),
    (
        "RSS max",
        lambda s: (
            f"{max((v for k, v in s['peak_rss_mb'].items() if k != SHARED_INCLUDED), default=0):.0f}"
        ),
    ),
]


def growth(steps: list[dict[str, Any]], key: str) -> float | None:
    if len(steps) < 2 or not steps[0].get(key):
        return None
    return round(steps[-1][key] / steps[0][key], 3)


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    steps, args = figures["steps"], figures["args"]
    last = steps[-1] if steps else {}
    peak_run = figures["peak_rss_run"]
    out: dict[str, Any] = {
        "steps": steps,
        "read_p99_growth": growth(steps, "read_p99_ms"),
        "read_peak_growth": growth(steps, "read_peak_rps"),
        "ingest_growth": growth(steps, "ingest_events_per_s"),
        "lookup_p99_growth": growth(steps, "lookup_p99_ms"),
        # CPU per operation: steadier than wall-clock figures on a shared machine
        "read_cpu_growth": growth(steps, "read_cpu_ms_per_request_with_servers"),
        "ingest_cpu_growth": growth(steps, "ingest_cpu_ms_per_1000_events"),
        "other_cpu_share_by_step": [s["read_other_share"] for s in steps],
        "rebuild_events_per_s": last.get("rebuild_events_per_s"),
        "bytes_per_million_events": (
            last["database_bytes_per_million_events"] + last["jetstream_bytes_per_million_events"]
            if last
            else None
        ),
        # Each process's own memory; PostgreSQL's shared buffers, one sized cache that
        # every backend maps, are counted once, as configured (shared_buffers_mb).
        "peak_rss_mb": max((v for k, v in peak_run.items() if k != SHARED_INCLUDED), default=0.0),
        "shared_buffers_mb": figures.get("shared_buffers_mb"),
        "peak_rss_mb_exchange": max(
            (v for k, v in peak_run.items() if k.startswith("hie")), default=0.0
        ),
        "peak_rss_mb_by_process": peak_run,
        "skipped_steps": figures["skipped"],
        "raw": figures["raw"],
        "server_errors": figures["server_errors"],
        "first_server_error": figures["first_server_error"],
        "server_warnings": figures["server_warnings"],
        "entries_per_resident": args.entries,
        "gateways": args.gateways,
        "batch_events": args.batch,
        "lag_offered_events_per_s": args.rate,
        "lag_seconds": args.rate_seconds,
        "read_rate": args.read_rate,
        "read_connections": args.read_connections,
        "cores": os.cpu_count(),
    }
    return out


def print_report(figures: dict[str, Any]) -> None:
    out = summary(figures)
    steps = out["steps"]
    rows = [[h for h, _ in COLUMNS], *([f(s) for _, f in COLUMNS] for s in steps)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    print()
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(
        "(batch/s: the fixed batch's events/s; lag99 av: lag p99 s at "
        f"{out['lag_offered_events_per_s']:,}/s right after it, autovacuum busy in "
        + ", ".join(
            f"{s['lag_during']['autovacuum_busy_share']:.0%}"
            + (
                " (none began)"
                if s["lag_during"].get("autovacuum_began_s") is None
                else f" on {', '.join(s['lag_during']['autovacuum_tables']) or '?'}"
            )
            for s in steps
        )
        + " of the samples; lag99: once autovacuum is over; read/lookup in ms; DB and JS: "
        "bytes per million ledger events)"
    )
    for s in steps:
        print(f"  {s['step_millions']:g}M peak RSS MB: {s['peak_rss_mb']}")
        if "ingest_wal" in s:
            print(
                f"  {s['step_millions']:g}M WAL: growth {s.get('growth_wal')}; batch "
                f"{s['ingest_wal']}, CPU {s['ingest_cpu_ms_per_1000_events']} ms per 1,000 events"
            )
    for s in out["skipped_steps"]:
        print(f"  skipped {s['step_millions']:g}M: {s['reason']}")
    for key, bound, way in GOALS:
        value = out[key]
        if value is None:
            print(f"{key}: n/a (one step)")
            continue
        ok = value <= bound if way == "≤" else value >= bound
        print(f"{key}: {value} (goal {way} {bound}: {'met' if ok else 'NOT met'})")
    print(
        f"CPU per operation, largest step / smallest: read {out['read_cpu_growth']}, ingest "
        f"{out['ingest_cpu_growth']}; share of the machine other work took during the read "
        f"peak, by step: {out['other_cpu_share_by_step']}"
    )
    print(f"raw figures of this machine: {out['raw']}")
    if out["server_errors"]:
        print(
            f"hie up logged {out['server_errors']} ERROR line(s), the first: "
            f"{out['first_server_error']}"
        )
    if out["server_warnings"]:
        print(f"hie up's warnings, by kind: {out['server_warnings']}")
    print(json.dumps(out, ensure_ascii=False))
