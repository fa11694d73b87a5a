"""The ingest benchmark under both crypto profiles in one run (``bench/ingest.py --profile
both``): each profile's figures side by side, gm ÷ intl, and what the signatures cost.

Under ``gm`` every submission's signature is SM2 (verified at a fraction of Ed25519's rate
on one core), the ledger is sealed with SM4-GCM and the audit log hashed with SM3. What a
gateway verifies is one signature per submission, not per event, so the cost per event is
the signature's divided by the events a submission carries; the side-by-side shows what it
came to end to end, with the gateways' CPU seconds, and ``bench/signatures.py``'s figures say
how much of a core the verifications alone take at the target rate.
"""

from __future__ import annotations

import json
from typing import Any

from bench.signatures import describe

PROFILES = ("intl", "gm")
BOTH = "both"
# Compared gm ÷ intl: throughput, the ledger's own limit, lag and receipt times.
COMPARED = (
    "events_per_s",
    "ledger_limit_events_per_s",
    "lag_p50_s",
    "lag_p99_s",
    "lag_during_autovacuum_p99_s",
    "receipt_p99_s",
)


def gateway_cpu(figures: dict[str, Any]) -> float:
    """Phase 1's CPU seconds of the gateway processes together (of `hie up` when the gateway
    ran inside it)."""
    cpu = figures.get("cpu_s_phase1_by_process", {})
    gateways = [v for k, v in cpu.items() if "gateway" in k]
    return round(sum(gateways) if gateways else sum(v for k, v in cpu.items() if "hie" in k), 1)


def side_by_side(
    by_profile: dict[str, dict[str, Any]], signatures: dict[str, Any]
) -> dict[str, Any]:
    """Both profiles' figures, the gm ÷ intl ratios, and the signature figures."""
    intl, gm = by_profile["intl"], by_profile["gm"]

    def ratio(key: str) -> float | None:
        a, b = intl.get(key), gm.get(key)
        if not isinstance(a, int | float) or not isinstance(b, int | float) or not a:
            return None
        return round(b / a, 2)

    ratios = {key: ratio(key) for key in COMPARED}
    a, b = gateway_cpu(intl), gateway_cpu(gm)
    ratios["gateway_cpu_s_per_event"] = (
        round((b / gm["events"]) / (a / intl["events"]), 2) if a and b else None
    )
    return {**by_profile, "gm_ratios": ratios, "signatures": signatures}


def print_profiles(figures: dict[str, Any]) -> None:
    """The comparison as a table for people, then everything as one JSON line."""
    rows = [
        ("end to end, events/s", "events_per_s"),
        ("ledger's own limit, events/s", "ledger_limit_events_per_s"),
        ("lag p50, s", "lag_p50_s"),
        ("lag p99, s", "lag_p99_s"),
        ("lag p99 during autovacuum, s", "lag_during_autovacuum_p99_s"),
        ("publish → receipt p99, s", "receipt_p99_s"),
    ]
    intl, gm, ratios = figures["intl"], figures["gm"], figures["gm_ratios"]
    print(f"== crypto profiles side by side ({intl['events']:,} events each)")
    print(f"  {'':32} {'intl':>12} {'gm':>12} {'gm ÷ intl':>10}")
    for label, key in rows:
        print(f"  {label:32} {intl[key]:>12,} {gm[key]:>12,} {ratios[key]!s:>10}")
    print(
        f"  {'gateways CPU s, phase 1':32} {gateway_cpu(intl):>12,} {gateway_cpu(gm):>12,} "
        f"{ratios['gateway_cpu_s_per_event']!s:>10} (per event)"
    )
    for line in describe(figures["signatures"]):
        print(line)
    print(json.dumps(figures, ensure_ascii=False))
