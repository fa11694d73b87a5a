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
import statistics
import tempfile

from bench.ingest_raw import raw_ledger_limit
from exchange.servers.replication import ReplicatedPostgres


def appends(url: str, events: int, singles: int) -> dict[str, float]:
    items = [{"source_id": f"s{i}", "text": "x" * 900, "n": i} for i in range(events)]
    batched = raw_ledger_limit(url, items)
    single_rate = raw_ledger_limit(url, items[:singles], batch=1)
    return {
        "batched_events_per_s": round(batched),
        "single_commit_ms": round(1000 / single_rate, 2),
    }


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"synchronous": [], "asynchronous": []}
    with tempfile.TemporaryDirectory(prefix="hie-repl-") as root:
        pair = ReplicatedPostgres(Path(root) / "pg")
        url = pair.start()
        try:
            # Alternating, so that the table's growth and the machine's other load fall on
            # both alike; the median of each.
            for _ in range(args.rounds):
                pair.resume_synchronous()
                pair.wait_synchronous()
                runs["synchronous"].append(appends(url, args.events, args.singles))
                pair.run_alone()
                runs["asynchronous"].append(appends(url, args.events, args.singles))
                print(runs["synchronous"][-1], runs["asynchronous"][-1], flush=True)
        finally:
            pair.stop()
    summary = {mode: {key: median(found, key) for key in found[0]} for mode, found in runs.items()}
    sync, alone = summary["synchronous"], summary["asynchronous"]
    summary["batched_cost"] = round(
        1 - sync["batched_events_per_s"] / alone["batched_events_per_s"], 3
    )
    summary["single_commit_added_ms"] = round(
        sync["single_commit_ms"] - alone["single_commit_ms"], 2
    )
    print(json.dumps({**summary, "server": str(pair.bin_dir)}))


if __name__ == "__main__":
    main()
