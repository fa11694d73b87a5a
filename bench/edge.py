"""Edge benchmark (issue 16): a village clinic's submissions queued at its edge node while its
line is down, and how fast they reach the exchange once it is back; beside it what the edge's
fsync per message costs the clinic's sender, and this machine's own fsync and CPU, measured in
the same run.

    sudo .venv/bin/python bench/edge.py [--submissions 10000] [--batch 1] [--correct-every 100]
                                        [--gateways 2] [--rounds 10] [--per-setting 2000]

The county is exchange/servers/edge_lab.py's: the hub as deployed (three NATS nodes with TLS
and accounts, a PostgreSQL primary with its synchronous standby, `hie up` with ``--gateways``
gateway processes) and one clinic, a network namespace of its own running `hie edge up`. Its
line is cut (its link down); the clinic's lab system's results (HL7 v2, ``--batch`` items per
submission, one message in ``--correct-every`` correcting an earlier result:
tests/e2e/edge_clinic.py) are sent with `hie submit` and kept by the edge; the line comes
back. ``catch_up_s`` runs from the link going up until the last receipt is stored at the edge
(the edge's own time of it); events are the items the submissions carry.

Then the checks: each submission in the ledger (lost: not there; duplicated: there twice),
and ``out_of_order``: submissions applied before one they depend on (a correction before the
result it corrects, a record's version before an earlier version of it). Submissions that do
not depend on each other may be applied in another order than they were made (two gateways
take the catch-up at once): how many were is ``applied_out_of_sequence``. `hie submit` run
again must send nothing and complete its journal.

The cost of ``sync_interval: always``: signed submissions published one at a time, as `hie
submit` does, to two edges on loopback (``always``, and NATS's default of 2 minutes),
``--rounds`` rounds alternating between them (bench/edge_sync.py).

Needs root (network namespaces). The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from adapters.envelope import new_private_key
from bench.edge_sync import fsync_latency, publish_cost
from bench.read_load import busy_seconds
from domain.submission import Submission
from exchange.servers import netns
from exchange.servers.edge_lab import EdgeLab
from tests.e2e.edge_clinic import lab_results, landed, ledger_events, pending
from tests.factories import visit_batch

CLINIC = "vc-bench"


def wait_status(lab: EdgeLab, check: Any, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while not check(status := lab.edge_status(CLINIC)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the edge did not get there within {seconds:.0f} s: {status}")
        time.sleep(0.5)
    return status


def submit(lab: EdgeLab, path: Path, batch: int, wait: float) -> tuple[int, dict[str, Any]]:
    done = lab.clinic_hie(
        CLINIC,
        *("submit", str(path), "--institution", CLINIC, "--batch", str(batch)),
        *("--wait", str(wait), "--report", "json"),
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"hie submit said: {done.stdout[-1000:]}{done.stderr[-1000:]}") from None


def outage(lab: EdgeLab, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The clinic's line down, its results queued at its edge, the line back: the figures."""
    lab.edge_up(CLINIC)
    wait_status(lab, lambda s: s["link"] == "up", 60)
    results = lab_results(
        root / "results.hl7", "B", args.submissions, correct_every=args.correct_every
    )
    lab.offline(CLINIC)
    wait_status(lab, lambda s: s["link"] == "down", 60)
    print(f"line down; sending {results.submissions:,} results ...", flush=True)

    began = time.monotonic()
    code, report = submit(lab, results.path, args.batch, wait=0)
    queued_in = time.monotonic() - began
    if code != 3:
        raise RuntimeError(f"hie submit exited {code}, not 3 (queued): {report.get('error')}")
    made = {s["submission_id"] for f in report["files"] for s in f["submissions"]}
    before = lab.edge_status(CLINIC)
    print(f"{before['queued']:,} queued in {queued_in:.1f} s; line up", flush=True)

    busy, up = busy_seconds(), datetime.now(UTC)
    lab.online(CLINIC)
    after = wait_status(
        lab,
        lambda s: s["queued"] == 0 and s["receipts"] >= before["receipts"] + len(made),
        args.timeout,
    )
    catch_up = (datetime.fromisoformat(after["last_receipt_at"]) - up).total_seconds()
    busy_share = (busy_seconds() - busy) / max(catch_up, 1e-9) / (os.cpu_count() or 1)

    code, again = submit(lab, results.path, args.batch, wait=30)
    statuses = {s["submission_id"]: s["status"] for f in again["files"] for s in f["submissions"]}
    journal = lab.members[CLINIC].home / "submitted"
    ids = set((journal / f"{CLINIC}.ids").read_text().split())
    journal_complete = (
        code == 0
        and set(statuses.values()) <= {"accepted", "not sent again"}
        and made <= ids
        and not pending(journal / f"{CLINIC}.pending")
    )

    events = asyncio.run(ledger_events(lab.topology.env))
    held = landed(events, CLINIC, results.tag)
    received = [
        e.received_at
        for e in events
        if isinstance(e, Submission.Accepted)
        and e.institution == CLINIC
        and e.submission_id in made
    ]
    items = len(held.keys)
    return {
        "queued": before["queued"],
        "delivered": len(made & set(held.ids)),
        "lost": len(made - set(held.ids)),
        "duplicated": held.duplicated,
        "out_of_order": held.orphans + len(held.overtaken),
        "catch_up_s": round(catch_up, 2),
        "catch_up_events_per_s": round(items / catch_up),
        "catch_up_submissions_per_s": round(len(made) / catch_up),
        "events": items,
        "corrections": results.corrections,
        "corrections_before_their_result": held.orphans,
        "versions_before_an_earlier_version": len(held.overtaken),
        "applied_out_of_sequence": held.out_of_order,
        "first_accepted_s": round((min(received) - up).total_seconds(), 2),
        "last_accepted_s": round((max(received) - up).total_seconds(), 2),
        "queued_per_s_offline": round(len(made) / queued_in),
        "journal_complete": journal_complete,
        "machine_busy_share_catch_up": round(busy_share, 2),
        "gateways": args.gateways,
        "batch": args.batch,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    if not netns.available():
        raise SystemExit("bench/edge.py needs root and iproute2 (network namespaces)")
    root = Path(tempfile.mkdtemp(prefix="hie-edge-bench-"))
    lab = EdgeLab(root / "lab", [CLINIC], consortium="bench", gateways=args.gateways)
    try:
        machine = {"cores": os.cpu_count(), "cpu": cpu_model(), **fsync_latency(root)}
        print(
            f"machine: {machine['cores']} cores ({machine['cpu']}); fsync of 2 KiB p50 "
            f"{machine['fsync_p50_ms']} ms, p99 {machine['fsync_p99_ms']} ms "
            f"({machine['fsyncs_per_s']:,}/s)",
            flush=True,
        )
        print("starting the hub and the clinic ...", flush=True)
        lab.start()
        key = new_private_key()
        envelopes = visit_batch(CLINIC, key, 0, args.per_setting)  # to each edge
        costs = asyncio.run(
            publish_cost(
                root / "sync",
                "bench",
                CLINIC,
                lab.members[CLINIC].leaf_creds,
                envelopes,
                args.rounds,
            )
        )
        always, default = costs["always"], costs["default"]
        print(
            f"publish → edge ack, one at a time: always p50 {always['publish_ack_p50_ms']} ms "
            f"p99 {always['publish_ack_p99_ms']} ms ({always['acks_per_s']:,}/s); default (2m) "
            f"p50 {default['publish_ack_p50_ms']} ms p99 {default['publish_ack_p99_ms']} ms "
            f"({default['acks_per_s']:,}/s)",
            flush=True,
        )
        figures = outage(lab, args, root)
        print(
            f"{figures['queued']:,} queued; all receipted {figures['catch_up_s']} s after the "
            f"line came back ({figures['catch_up_submissions_per_s']:,} submissions/s, "
            f"{figures['catch_up_events_per_s']:,} events/s; first accepted at "
            f"{figures['first_accepted_s']} s); lost {figures['lost']}, duplicated "
            f"{figures['duplicated']}, out of order {figures['out_of_order']} (applied out of "
            f"sequence, independent of each other: {figures['applied_out_of_sequence']}); "
            f"journal complete: {figures['journal_complete']}",
            flush=True,
        )
        return {
            **figures,
            "sync_always": always,
            "sync_default": default,
            "sync_always_cost_ms_per_submission": round(
                always["publish_ack_p50_ms"] - default["publish_ack_p50_ms"], 3
            ),
            **machine,
        }
    finally:
        lab.stop()
        if os.environ.get("HIE_BENCH_KEEP"):
            print(f"kept: {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submissions", type=int, default=10_000, help="queued while the line is down")
    p.add_argument("--batch", type=int, default=1, help="items per submission (hie submit --batch)")
    p.add_argument(
        "--correct-every", type=int, default=100, help="one message in N corrects an earlier one"
    )
    p.add_argument("--gateways", type=int, default=2, help="gateway processes beside hie up")
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds of the sync cost")
    p.add_argument("--per-setting", type=int, default=2000, help="publishes to each edge")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds the catch-up may take")
    return p.parse_args()


if __name__ == "__main__":
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # TLS close noise between figures
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    print(json.dumps(main(parse())))
