"""Ingest benchmark: a synthetic county submitted over NATS by several institutions at once,
end to end (published → in the ledger → visible in the patient-record projection), beside
this machine's raw figures for the same events, measured in the same run.

    .venv/bin/python bench/ingest.py [--events 1050000] [--institutions 4] [--gateways 2]
                                     [--per-submission 100] [--rate 5000] [--rate-seconds 20]
                                     [--autovacuum-wait 90] [--rebuild]
                                     [--topology embedded|local-cluster]
                                     [--profile intl|gm|both]

The exchange runs as it does in production: `hie up` (projection, read API) with
``--gateways`` gateway processes beside it (HIE_GATEWAY_PROCESSES; 0 runs the gateway inside
`hie up`), on the embedded PostgreSQL and NATS (or HIE_DATABASE_URL / HIE_NATS_URL, with
HIE_NATS_CREDS / HIE_NATS_CA if they ask for them). ``--topology local-cluster`` then runs the
same events through the production topology on loopback (exchange/servers/local_topology.py:
three NATS nodes with R3 streams, TLS and accounts; a PostgreSQL primary with a synchronous
standby on ``verify-full``) and prints both, and the cost of replication as ratios.

Each institution publishes from its own process. Envelopes are built and signed before the
clock starts. Phase 1 sends everything as fast as JetStream takes it. Phase 2 offers a fixed
rate and measures, per submission, the time from publish to receipt and to visible in the
projection, twice: at once, while PostgreSQL's autovacuum of the tables phase 1 filled runs
(waited for, up to ``--autovacuum-wait`` s, if no worker is busy yet), and again once it is
over; for each window it reports which tables autovacuum worked on and for how many seconds
of the window, its CPU and I/O, every process's CPU and the machine's CPU and I/O stalls.
Every process's RSS is sampled throughout. Raw figures: the ledger's library appending the
same events one aggregate per event in batches of 100, asyncpg COPY of the same rows,
JetStream publish and fetch+ack of the same envelopes (to a stream with as many copies as the
exchange's). With ``--rebuild``, last, a `hie projections rebuild` of everything the run
stored, timed until replayed.

``--profile`` is the consortium's crypto profile (HIE_CRYPTO_PROFILE of the exchange the run
sets up, and the keys the county signs with): ``intl`` (Ed25519), ``gm`` (SM2 with SM3, the
ledger in SM4-GCM, the audit log in SM3), or ``both``: the same county's events (each
profile's own keys and signatures) through an exchange under each in turn, in one run, then
the two side by side with the gm ÷ intl ratios, and each profile's signature verification
per core (``bench/signatures.py``) beside them.

The parts live beside this script: the synthetic county in ``bench/ingest_county.py``, the
servers in ``bench/ingest_topology.py``, one topology's run in ``bench/ingest_run.py``, the
raw figures in ``bench/ingest_raw.py``, the load in ``bench/ingest_load.py``, a fixed-rate
window in ``bench/ingest_window.py`` (autovacuum: ``bench/autovacuum.py``), the figures and
the printed summary in ``bench/ingest_report.py``.

The last line is one JSON object: the single node's figures, and with ``--topology
local-cluster`` the cluster's under ``local_cluster`` and the ratios under ``cluster_ratios``;
with ``--profile both``, each profile's figures under its name, ``gm_ratios`` and
``signatures``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the project root is wanted.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from typing import Any

from bench.cleanup import drop_what_the_run_made
from bench.ingest_county import build_county
from bench.ingest_load import publisher_main
from bench.ingest_profiles import BOTH, PROFILES, print_profiles, side_by_side
from bench.ingest_report import print_report, print_topology, with_cluster
from bench.ingest_run import run_on
from bench.ingest_topology import (
    LOCAL_CLUSTER,
    Servers,
    start_local_cluster,
    start_single,
)
from bench.signatures import signature_rates


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.profile != BOTH:
        return await under_profile(args, args.profile)
    figures = {name: await under_profile(args, name) for name in PROFILES}
    return side_by_side(figures, signature_rates(args.per_submission, 20_000, 2.0))


async def under_profile(args: argparse.Namespace, profile: str) -> dict[str, Any]:
    """The whole run with the exchange set up under the crypto ``profile`` and the county's
    envelopes signed with keys of it."""
    # The exchange's processes and the run's own settings take it from the environment (the
    # topologies pass the environment on); each run's data directory records it afresh.
    os.environ["HIE_CRYPTO_PROFILE"] = profile
    work = Path(tempfile.mkdtemp(prefix=f"hie-bench-{profile}-"))
    consortium = f"b{uuid.uuid4().hex[:8]}"
    print(f"== crypto profile {profile}", flush=True)
    try:
        county = build_county(
            work,
            events=args.events,
            institutions=args.institutions,
            per_submission=args.per_submission,
            rate=args.rate,
            rate_seconds=args.rate_seconds,
            profile=profile,
        )
        single = await on_topology("single", county, args, work, consortium)
        single["crypto_profile"] = profile
        if args.topology != LOCAL_CLUSTER:
            return single
        cluster = await on_topology(LOCAL_CLUSTER, county, args, work, consortium)
        return with_cluster(single, cluster)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gigabytes of data and signed envelopes


async def on_topology(
    kind: str, county: Any, args: argparse.Namespace, work: Path, consortium: str
) -> dict[str, Any]:
    """Start the servers of one topology, run everything on them, stop them (or, servers of
    the user's, drop what the run made there)."""
    root = work / kind
    root.mkdir()
    servers: Servers
    if kind == LOCAL_CLUSTER:
        print("starting the local cluster (3 NATS nodes, PostgreSQL pair) ...", flush=True)
        servers = await asyncio.to_thread(start_local_cluster, root, consortium, args.gateways)
    else:
        servers = await start_single(root, consortium, args.gateways)
    try:
        figures = await run_on(servers, county, args, root)
        print_topology(figures)  # now: a later failure leaves these printed
        return figures
    finally:
        if servers.stop is not None:
            await asyncio.to_thread(servers.stop)
        else:  # servers of the user's: leave them as they were found
            await drop_what_the_run_made(servers.database_url, servers.nats, consortium)
        shutil.rmtree(root, ignore_errors=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_050_000)
    p.add_argument("--institutions", type=int, default=4)
    p.add_argument("--gateways", type=int, default=2, help="gateway processes beside hie up")
    p.add_argument("--per-submission", type=int, default=100)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--rate-seconds", type=float, default=20.0)
    p.add_argument(
        "--autovacuum-wait",
        type=float,
        default=90.0,
        help="how long the first fixed-rate window waits for autovacuum to begin",
    )
    p.add_argument("--rebuild", action="store_true", help="then time a projection rebuild")
    p.add_argument(
        "--topology",
        choices=["embedded", LOCAL_CLUSTER],
        default="embedded",
        help="local-cluster: the single node, then the 3-node cluster, same events",
    )
    p.add_argument(
        "--profile",
        choices=[*PROFILES, BOTH],
        default="intl",
        help="the consortium's crypto profile; both: intl, then gm, side by side",
    )
    p.add_argument("--publisher", help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--nats-creds", help=argparse.SUPPRESS)
    p.add_argument("--nats-ca", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    # asyncio warns at each TLS connection NATS closes ("returning true from eof_received()
    # has no effect when using ssl"): noise between the figures.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    arguments = parse()
    if arguments.publisher:
        publisher_main(arguments)
        sys.exit(0)
    result = asyncio.run(main(arguments))
    if arguments.profile == BOTH:
        print_profiles(result)
    else:
        print_report(result)
