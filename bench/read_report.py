"""The read benchmark's report: the targets, the figures of a run as one JSON-ready dict (latency
at the offered rate, the peak, CPU per request by process, the raw figures beside them), and
the summary lines printed above it (the last line is that dict as one JSON object)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench.read_county import INSTITUTIONS

TARGETS = {"p50_ms": 6.0, "p99_ms": 15.0, "peak_rps": 600}
PAGE_P99_MS = 50.0  # the physician's record page at --page-rate (issue 15)


def per_request_ms(cpu: float, result: dict[str, Any]) -> float | None:
    answered = result["answered"]
    return round(cpu / answered * 1000, 3) if answered else None


def build_figures(
    args: argparse.Namespace,
    *,
    results: dict[str, dict[str, Any]],
    hello_results: dict[str, dict[str, Any]],
    raw: dict[str, float],
    expected: int,
    total_items: int,
    submissions: int,
    seeded_s: float,
    server_errors: int,
    hie_rss: float,
    pages: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run's figures from the load generator's phases against the exchange
    (``results``) and against the bare Starlette app (``hello_results``)."""
    rate = results["rate"]
    flats = {c: results[f"flat-{c}"] for c in args.connections}
    best = max(args.connections, key=lambda c: flats[c]["rps"])
    hellos = {c: hello_results[f"hello-flat-{c}"] for c in args.connections}
    peak = flats[best]
    peak_cpu = peak["server_cpu_s"]
    return {
        "p50_ms": rate["p50_ms"],
        "p90_ms": rate["p90_ms"],
        "p99_ms": rate["p99_ms"],
        "max_ms": rate["max_ms"],
        "peak_rps": peak["rps"],
        "rate_offered_per_s": args.rate,
        "rate_achieved_per_s": rate["rps"],
        "rate_requests": rate["requests"],
        "rate_errors": rate["errors"],
        "rate_service_p50_ms": rate["service"]["p50_ms"],
        "rate_service_p99_ms": rate["service"]["p99_ms"],
        "rate_send_late_p99_ms": rate["send_late"]["p99_ms"],
        "peak_connections": best,
        "rps_by_connections": {str(c): r["rps"] for c, r in flats.items()},
        "p50_ms_by_connections": {str(c): r["p50_ms"] for c, r in flats.items()},
        "p99_ms_by_connections": {str(c): r["p99_ms"] for c, r in flats.items()},
        "errors": sum(r["errors"] for r in results.values()),
        "error_kinds": {k: v for r in results.values() for k, v in r["error_kinds"].items()},
        "answers_checked": sum(r["checked"] for r in results.values()),
        "server_log_errors": server_errors,
        "patients": args.patients,
        "entries_per_patient": args.entries,
        "bundle_entries": expected,
        "institutions": len(INSTITUTIONS),
        "seed_items": total_items,
        "seed_submissions": submissions,
        "seed_s": round(seeded_s, 1),
        "response_kb": round(peak["response_bytes"] / 1024, 1),
        "cpu_ms_per_request_at_peak": {
            **{name: per_request_ms(cpu, peak) for name, cpu in peak_cpu.items()},
            "load generator": per_request_ms(peak["cpu_s"], peak),
        },
        "cpu_ms_per_request_at_rate": {
            **{name: per_request_ms(cpu, rate) for name, cpu in rate["server_cpu_s"].items()},
            "load generator": per_request_ms(rate["cpu_s"], rate),
        },
        "cpu_s_by_phase": {
            name: {
                **r["server_cpu_s"],
                "load generator": r["cpu_s"],
                "rest of the machine": r["other_cpu_s"],
            }
            for name, r in results.items()
        },
        # The share of the machine's CPU that went elsewhere (other processes, interrupts)
        # while phase A and the peak run were measured: on a shared machine, read the
        # figures with it.
        "rest_of_machine_share_at_rate": rate["other_share"],
        "rest_of_machine_share_at_peak": peak["other_share"],
        "hie_up_peak_rss_mb": round(hie_rss, 1),
        **raw,
        "hello_rps": max(r["rps"] for r in hellos.values()),
        "hello_rps_by_connections": {str(c): r["rps"] for c, r in hellos.items()},
        "hello_p50_ms": hello_results["hello-rate"]["p50_ms"],
        "hello_p99_ms": hello_results["hello-rate"]["p99_ms"],
        "hello_cpu_ms_per_request": {
            "hello server": per_request_ms(
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])]["server_cpu_s"]["hello server"],
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])],
            ),
            "load generator": per_request_ms(
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])]["cpu_s"],
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])],
            ),
        },
        "targets": TARGETS,
        "meets_targets": (
            rate["p50_ms"] is not None
            and rate["p50_ms"] <= TARGETS["p50_ms"]
            and rate["p99_ms"] <= TARGETS["p99_ms"]
            and peak["rps"] >= TARGETS["peak_rps"]
        ),
        "cores": os.cpu_count(),
        **page_figures(args, pages or {}),
    }


def page_figures(args: argparse.Namespace, pages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The record page beside ``$everything`` at the same rate, each run twice: the worse
    p50 and p99 of each, and what each request cost the exchange."""
    if not pages:
        return {}

    def worst(kind: str, key: str) -> float | None:
        found = [pages[f"{kind}-{n}"][key] for n in (1, 2) if pages[f"{kind}-{n}"][key] is not None]
        return max(found) if found else None

    return {
        "page_rate_per_s": args.page_rate,
        "page_p50_ms": worst("page", "p50_ms"),
        "page_p99_ms": worst("page", "p99_ms"),
        "page_errors": sum(pages[f"page-{n}"]["errors"] for n in (1, 2)),
        "api_p50_ms_at_page_rate": worst("api", "p50_ms"),
        "api_p99_ms_at_page_rate": worst("api", "p99_ms"),
        "page_kb": round(pages["page-1"]["response_bytes"] / 1024, 1),
        "hie_up_cpu_ms_per_request": {
            kind: per_request_ms(pages[f"{kind}-1"]["server_cpu_s"]["hie up"], pages[f"{kind}-1"])
            for kind in ("api", "page")
        },
        "page_p99_target_ms": PAGE_P99_MS,
    }


def print_report(figures: dict[str, Any]) -> None:
    """The summary lines, then the figures as one JSON object on the last line."""
    print(
        f"at {figures['rate_offered_per_s']:g} req/s: p50 {figures['p50_ms']} ms, p90 "
        f"{figures['p90_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms, "
        f"{figures['rate_errors']} error(s)  [targets p50 ≤ {TARGETS['p50_ms']:g}, "
        f"p99 ≤ {TARGETS['p99_ms']:g}]"
    )
    print(
        f"flat out: {figures['rps_by_connections']} req/s by connections; peak "
        f"{figures['peak_rps']} req/s  [target ≥ {TARGETS['peak_rps']}]; "
        f"{figures['response_kb']} KB per answer, {figures['bundle_entries']} entries"
    )
    print(
        f"CPU ms per request at peak: {figures['cpu_ms_per_request_at_peak']}; hie up peak "
        f"RSS {figures['hie_up_peak_rss_mb']} MB; the rest of the machine took "
        f"{figures['rest_of_machine_share_at_rate']:.0%} of its CPU during phase A, "
        f"{figures['rest_of_machine_share_at_peak']:.0%} during the peak run"
    )
    print(
        f"raw: SELECT 1 {figures['raw_pg_select1_per_s']:,}/s (1 connection), "
        f"{figures['raw_pg_select1_per_s_8_connections']:,}/s (8), "
        f"{figures['raw_pg_pool_select1_per_s']:,}/s through a pool; INSERT+COMMIT "
        f"{figures['raw_pg_commit_per_s']:,}/s (p50 {figures['raw_pg_commit_p50_ms']} ms); "
        f"bare Starlette hello {figures['hello_rps']:,} req/s, p50 {figures['hello_p50_ms']} "
        f"ms at {figures['rate_offered_per_s']:g}/s"
    )
    if "page_p99_ms" in figures:
        print(
            f"record page at {figures['page_rate_per_s']:g} req/s: p50 {figures['page_p50_ms']} "
            f"ms, p99 {figures['page_p99_ms']} ms, {figures['page_errors']} error(s) "
            f"[target p99 ≤ {PAGE_P99_MS:g}]; $everything at the same rate: p50 "
            f"{figures['api_p50_ms_at_page_rate']} ms, p99 {figures['api_p99_ms_at_page_rate']} "
            f"ms; hie up CPU ms per request {figures['hie_up_cpu_ms_per_request']}"
        )
    print(json.dumps(figures, ensure_ascii=False))
