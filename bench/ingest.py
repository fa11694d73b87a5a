"""Ingest benchmark: a synthetic county submitted over NATS by several institutions at once,
end to end (published → in the ledger → visible in the patient-record projection), beside
this machine's raw figures for the same events, measured in the same run.

    .venv/bin/python bench/ingest.py [--events 1050000] [--institutions 4] [--gateways 2]
                                     [--per-submission 100] [--rate 5000] [--rate-seconds 20]
                                     [--rebuild]

The exchange runs as it does in production: `hie up` (projection, read API) with
``--gateways`` gateway processes beside it (HIE_GATEWAY_PROCESSES; 0 runs the gateway inside
`hie up`), on the embedded PostgreSQL and NATS (or HIE_DATABASE_URL / HIE_NATS_URL). Each
institution publishes from its own process. Envelopes are built and signed before the clock
starts. Phase 1 sends everything as fast as JetStream takes it; phase 2, once PostgreSQL's
autovacuum of the tables phase 1 filled is over (the wait is printed), offers a fixed rate
and measures, per submission, the time from publish to receipt and to visible in the
projection. Every process's RSS is sampled throughout. Raw figures: the ledger's library
appending the same events one aggregate per event in batches of 100, asyncpg COPY of the
same rows, JetStream publish and fetch+ack of the same envelopes. With ``--rebuild``, last, a
`hie projections rebuild` of everything the run stored, timed until replayed.

The parts live beside this script: the synthetic county in ``bench/ingest_county.py``, the
raw figures in ``bench/ingest_raw.py``, the load and what it watches in
``bench/ingest_load.py``, the figures and the printed summary in ``bench/ingest_report.py``.

The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the project root is wanted.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Any

import asyncpg
import nats
import psutil

from adapters.envelope import new_private_key, private_key_pem, public_key_b64
from bench.cleanup import drop_what_the_run_made
from bench.ingest_county import read_envelopes, write_envelopes
from bench.ingest_load import (
    Receipts,
    Rss,
    autovacuum_done,
    cpu_seconds,
    fixed_rate,
    publisher_main,
    wait_visible,
)
from bench.ingest_raw import raw_copy, raw_jetstream, raw_ledger_limit
from bench.ingest_report import build_figures, print_errors, print_report
from bench.read_load import Processes, start_hie_up

ROOT = Path(__file__).resolve().parent.parent
HIE = str(Path(sys.executable).with_name("hie"))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from exchange.ingest.ledger import Ledger
    from exchange.servers.embedded import EmbeddedServers
    from exchange.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="hie-bench-"))
    servers = None
    db_url, nats_url = os.environ.get("HIE_DATABASE_URL"), os.environ.get("HIE_NATS_URL")
    if not (db_url and nats_url):
        servers = EmbeddedServers(work / "servers")
        db_url, nats_url = servers.start()
    procs: list[subprocess.Popen[bytes]] = []
    consortium = f"b{uuid.uuid4().hex[:8]}"
    try:
        base = db_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute(f'CREATE DATABASE "{consortium}"')
        await admin.close()
        db_url = f"{base}/{consortium}"
        env = {
            **os.environ,
            "HIE_DATA_DIR": str(work / "data"),
            "HIE_CONSORTIUM": consortium,
            "HIE_DATABASE_URL": db_url,
            "HIE_NATS_URL": nats_url,
            "HIE_HTTP_PORT": "0",
        }
        settings = load_settings(env)  # generates the installation's secrets into the data dir

        # The county: institutions with their keys, residents shared out, envelopes signed.
        institutions = ["county-hospital", *[f"thc-{i}" for i in range(1, args.institutions)]]
        per_resident = 75
        residents = args.events // per_resident // len(institutions)
        keys = {inst: new_private_key() for inst in institutions}
        print(
            f"building {args.events:,} events: {len(institutions)} institutions × "
            f"{residents:,} residents × {per_resident} events, {args.per_submission} per "
            "submission ...",
            flush=True,
        )
        files, subs, events = {}, 0, 0
        for n, inst in enumerate(institutions):
            files[inst] = work / f"{inst}.envelopes"
            (work / f"{inst}.pem").write_bytes(private_key_pem(keys[inst]))
            s, e = write_envelopes(
                files[inst],
                inst,
                keys[inst],
                range(n * residents, (n + 1) * residents),
                per_resident,
                args.per_submission,
            )
            subs, events = subs + s, events + e
        rate_sets: dict[str, list[bytes]] = {inst: [] for inst in institutions}
        for n, inst in enumerate(institutions):  # fresh residents for the fixed-rate phase
            path = work / f"{inst}.rate"
            first = 10**6 + n * 2000
            write_envelopes(
                path,
                inst,
                keys[inst],
                range(first, first + 2000),
                per_resident,
                args.per_submission,
            )
            rate_sets[inst] = read_envelopes(path)

        ledger = await asyncio.to_thread(
            Ledger, db_url, settings.secrets.ledger_cipher_key, settings.secrets.pseudonym_key
        )
        for inst in institutions:
            await asyncio.to_thread(
                ledger.register_institution,
                inst,
                f"机构{inst}",
                "township_health_centre",
                public_key_b64(keys[inst]),
            )
        await asyncio.to_thread(ledger.close)

        # Raw figures first, on the same servers (their own scratch tables and stream).
        sample_items = [
            i
            for data in read_envelopes(files[institutions[0]])[:200]
            for i in json.loads(data)["events"]
        ]
        sample_envs = read_envelopes(files[institutions[0]])[:500]
        print("raw figures ...", flush=True)
        ledger_limit = await asyncio.to_thread(raw_ledger_limit, db_url, sample_items)
        copy_rate = await raw_copy(db_url, sample_items)
        js_rates = await raw_jetstream(nats_url, sample_envs, args.per_submission)

        # The exchange: `hie up` and its gateway processes.
        env["HIE_GATEWAY_PROCESSES"] = str(args.gateways)
        started = Processes()
        try:
            up_proc, _ = await start_hie_up(env, work / "hie-up.log", started)
        finally:
            procs += started.popen
        await asyncio.sleep(2.0)
        up = psutil.Process(up_proc.pid)
        watched = {f"hie up (pid {up.pid})": up}
        watched |= {
            f"hie gateway (pid {c.pid})": c
            for c in up.children()
            if "gateway" in " ".join(c.cmdline())
        }
        if servers is not None:
            for name, server in (("postgres", servers.postgres), ("nats-server", servers.nats)):
                if server.proc is not None:
                    watched[f"server {name}"] = psutil.Process(server.proc.pid)
        rss = Rss(watched)
        stop = asyncio.Event()
        sampler = asyncio.create_task(rss.sample(stop))
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        cpu_before = {n: cpu_seconds(p, n.startswith("server")) for n, p in watched.items()}

        # Phase 1: everything, as fast as it goes.
        print(f"phase 1: {events:,} events in {subs:,} submissions, full speed ...", flush=True)
        receipts = Receipts()
        receipts.expected = subs
        listener = await nats.connect(nats_url)
        await listener.subscribe(f"hie.{consortium}.receipt.*", cb=receipts.on_msg)
        start = time.monotonic()
        publishers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--publisher",
                    str(files[inst]),
                    "--nats-url",
                    nats_url,
                    "--subject",
                    f"hie.{consortium}.submit.{inst}",
                ]
            )
            for inst in institutions
        ]
        end = await wait_visible(pool, receipts, timeout=3600)
        await listener.close()
        for p in publishers:
            p.wait()
        elapsed = end - start
        cpu = {
            n: cpu_seconds(p, n.startswith("server")) - cpu_before[n]
            for n, p in watched.items()
            if p.is_running()
        }

        # Phase 2: a fixed offered rate, lag per submission, once PostgreSQL's autovacuum of
        # the tables phase 1 just filled is over (measured here: it overlaps the first seconds
        # of phase 2 and takes the lag p99 from ~0.08 s to ~0.3 s on two cores).
        settled = await autovacuum_done(pool, timeout=300)
        print(
            f"phase 2: {args.rate:,} events/s offered for {args.rate_seconds} s (after "
            f"{settled:.0f} s of autovacuum) ...",
            flush=True,
        )
        lags, to_receipt = await fixed_rate(
            nats_url, consortium, pool, rate_sets, args.rate, args.rate_seconds, args.per_submission
        )
        rebuild = await measure_rebuild(pool, env, up) if args.rebuild else None
        print_errors(work / "hie-up.log")
        stop.set()
        await sampler
        await pool.close()
        return (rebuild or {}) | build_figures(
            args,
            events=events,
            subs=subs,
            institutions=len(institutions),
            elapsed=elapsed,
            ledger_limit=ledger_limit,
            copy_rate=copy_rate,
            js_rates=js_rates,
            settled=settled,
            lags=lags,
            to_receipt=to_receipt,
            peak=rss.peak,
            cpu=cpu,
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if servers is not None:
            servers.stop()
        else:  # servers of the user's: leave them as they were found
            await drop_what_the_run_made(db_url, nats_url, consortium)
        shutil.rmtree(work, ignore_errors=True)  # gigabytes of data and signed envelopes


async def measure_rebuild(
    pool: asyncpg.Pool, env: dict[str, str], up: psutil.Process
) -> dict[str, Any]:
    """`hie projections rebuild` on the ledger the run filled, timed until the running
    exchange has replayed it all: entries (record versions) per second and `hie up`'s CPU."""
    end = await pool.fetchval("SELECT max(notification_id) FROM ledger_events")
    await wait_position(pool, end, 600)
    entries = await pool.fetchval("SELECT count(*) FROM record_entries")
    print(f"rebuild: replaying {end:,} ledger events ({entries:,} entries) ...", flush=True)
    cpu = cpu_seconds(up, False)
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        HIE, "projections", "rebuild", env=env, stdout=subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        raise RuntimeError("hie projections rebuild failed")
    await wait_position(pool, end, 3600)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(up, False) - cpu
    again = await pool.fetchval("SELECT count(*) FROM record_entries")
    if again != entries:
        raise RuntimeError(f"the rebuild made {again} entries, not {entries}")
    print(
        f"rebuild: {entries / elapsed:,.0f} entries/s ({elapsed:.1f} s; hie up "
        f"{cpu * 1e6 / entries:.1f} µs CPU per entry)",
        flush=True,
    )
    return {
        "rebuild_s": round(elapsed, 2),
        "rebuild_entries_per_s": round(entries / elapsed),
        "rebuild_up_cpu_us_per_entry": round(cpu * 1e6 / entries, 1),
    }


async def wait_position(pool: asyncpg.Pool, end: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            await pool.fetchval(
                "SELECT position FROM projection_position WHERE name = 'patient_record'"
            )
            >= end
        ):
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("the projection did not catch up in time")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_050_000)
    p.add_argument("--institutions", type=int, default=4)
    p.add_argument("--gateways", type=int, default=2, help="gateway processes beside hie up")
    p.add_argument("--per-submission", type=int, default=100)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--rate-seconds", type=float, default=20.0)
    p.add_argument("--rebuild", action="store_true", help="then time a projection rebuild")
    p.add_argument("--publisher", help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.publisher:
        publisher_main(arguments)
        sys.exit(0)
    print_report(asyncio.run(main(arguments)))
