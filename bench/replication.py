"""What the synchronous standby costs the ledger: appends on a primary whose commits wait for
its standby's flush, then on the same pair switched to asynchronous commits (``run_alone``),
both over TLS, through the exchange's ledger settings (cipher, compressor, multi-host URL).

    .venv/bin/python bench/replication.py [--events 20000] [--singles 300]

Batches of 100 events (the gateway's way) and single-event saves (each one commit, where the
standby's round trip shows most). The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the project root is wanted.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import tempfile
import time
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from bench.ingest_raw import base64_key
from exchange.ingest.ledger import ledger_env
from exchange.servers.replication import ReplicatedPostgres


class Fact(Aggregate):
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item


class RawLedger(Application[Any]):
    name = "rawledger"


def appends(url: str, events: int, singles: int) -> dict[str, float]:
    items = [{"source_id": f"s{i}", "text": "x" * 900, "n": i} for i in range(events)]
    env = ledger_env(url, base64_key())
    env["APPLICATION_RECORDER_TOPIC"] = "eventsourcing.postgres:PostgresApplicationRecorder"
    app = RawLedger(env=env)
    try:
        t = time.perf_counter()
        for i in range(0, len(items), 100):
            app.save(*[Fact(item) for item in items[i : i + 100]])
        batched = len(items) / (time.perf_counter() - t)
        t = time.perf_counter()
        for item in items[:singles]:
            app.save(Fact(item))
        single_ms = (time.perf_counter() - t) / singles * 1000
    finally:
        app.close()
    return {"batched_events_per_s": round(batched), "single_commit_ms": round(single_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hie-repl-") as root:
        pair = ReplicatedPostgres(Path(root) / "pg")
        url = pair.start()
        try:
            synchronous = appends(url, args.events, args.singles)
            print("synchronous standby:", synchronous, flush=True)
            pair.run_alone()
            alone = appends(url, args.events, args.singles)
            print("asynchronous (run_alone):", alone, flush=True)
        finally:
            pair.stop()
    print(
        json.dumps(
            {
                "synchronous": synchronous,
                "asynchronous": alone,
                "batched_cost": round(
                    1 - synchronous["batched_events_per_s"] / alone["batched_events_per_s"], 3
                ),
                "server": str(pair.bin_dir),
            }
        )
    )


if __name__ == "__main__":
    main()
