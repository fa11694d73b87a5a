"""Signature verification per core under each crypto profile, and what a gateway needs.

    .venv/bin/python bench/signatures.py [--per-submission 100] [--events-per-s 20000]
                                         [--seconds 2]

On one thread (one core): Ed25519 and SM2 (with SM3 and the id 1234567812345678, through
OpenSSL's libcrypto) signing and verifying, over 64 bytes and over the canonical bytes of a
bench envelope of ``--per-submission`` events (the hash of the whole envelope is part of
each), and the gateway's whole check of a signature (``exchange.ingest.signatures``: the
envelope's RFC 8785 bytes, the form, the verification). From these: how many signatures a
second the exchange must verify at ``--events-per-s`` with that many events per submission,
and what share of one core that takes under each profile.

The last line is one JSON object of the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import base64
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls a second of ``fn`` on this thread, over about ``seconds``."""
    fn()  # warm
    count, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(20):
            fn()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - began)


def signature_rates(
    per_submission: int = 100, events_per_s: float = 20_000, seconds: float = 2.0
) -> dict[str, Any]:
    """The figures (see the module's note), each profile measured in turn on this thread."""
    from bench.ingest_county import resident_items

    items: list[dict[str, Any]] = []
    n = 0
    while len(items) < per_submission:
        items += resident_items("county-hospital", n, 75)
        n += 1
    needed = events_per_s / per_submission
    figures: dict[str, Any] = {
        "per_submission": per_submission,
        "events_per_s": events_per_s,
        "signatures_needed_per_s": round(needed, 1),
        "cpu": os.cpu_count(),
    }
    for name in ("intl", "gm"):
        figures[name] = _profile_rates(name, items[:per_submission], needed, seconds)
    figures["sm2_over_ed25519_verify_64b"] = round(
        figures["gm"]["verify_64b_per_s"] / figures["intl"]["verify_64b_per_s"], 2
    )
    figures["gm_over_intl_gateway_check"] = round(
        figures["gm"]["gateway_check_per_s"] / figures["intl"]["gateway_check_per_s"], 2
    )
    return figures


def _profile_rates(
    name: str, items: list[dict[str, Any]], needed: float, seconds: float
) -> dict[str, Any]:
    from adapters.envelope import build_envelope, canonical_bytes, load_public_key, public_key_b64
    from cryptoprofile import by_name
    from exchange.ingest.signatures import signature_problem

    profile = by_name(name)
    key = profile.new_private_key()
    public = load_public_key(public_key_b64(key))
    doc = build_envelope(
        institution="county-hospital", items=items, key=key, sent_at=datetime.now(UTC)
    )
    message = canonical_bytes(doc)
    signature = base64.b64decode(doc["signature"])
    small = os.urandom(64)
    small_signature = key.sign(small)
    check = _rate(lambda: signature_problem(doc, public), seconds)
    return {
        "algorithm": profile.signature,
        "envelope_bytes": len(message),
        "sign_64b_per_s": round(_rate(lambda: key.sign(small), seconds)),
        "verify_64b_per_s": round(_rate(lambda: public.verify(small_signature, small), seconds)),
        "verify_envelope_per_s": round(_rate(lambda: public.verify(signature, message), seconds)),
        "gateway_check_per_s": round(check),
        "core_share_at_target": round(needed / check, 3),
    }


def describe(f: dict[str, Any]) -> list[str]:
    """The figures as lines for people."""
    lines = [
        f"signatures, one core ({f['cpu']} on this machine), envelopes of "
        f"{f['per_submission']} events:"
    ]
    for name in ("intl", "gm"):
        g = f[name]
        lines.append(
            f"  {name:4} {g['algorithm']:7}: sign {g['sign_64b_per_s']:,}/s, verify "
            f"{g['verify_64b_per_s']:,}/s (64 bytes), {g['verify_envelope_per_s']:,}/s "
            f"(an envelope, {g['envelope_bytes']:,} bytes), the gateway's whole check "
            f"{g['gateway_check_per_s']:,}/s"
        )
    lines.append(
        f"  SM2 verifies at {f['sm2_over_ed25519_verify_64b']} × Ed25519's rate; the gateway's "
        f"check under gm at {f['gm_over_intl_gateway_check']} × intl's"
    )
    lines.append(
        f"  at {f['events_per_s']:,.0f} events/s the exchange verifies "
        f"{f['signatures_needed_per_s']:,} signatures/s: {f['intl']['core_share_at_target']:.1%}"
        f" of a core under intl, {f['gm']['core_share_at_target']:.1%} under gm"
    )
    return lines


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-submission", type=int, default=100)
    p.add_argument("--events-per-s", type=float, default=20_000)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    figures = signature_rates(args.per_submission, args.events_per_s, args.seconds)
    print("\n".join(describe(figures)))
    print(json.dumps(figures))
