"""Scale benchmark: one exchange grown to county size in steps, measured at each step.

    .venv/bin/python bench/scale.py [--steps 1,3,10] [--entries 200] [--gateways 2]
    .venv/bin/python bench/scale.py --steps 0.02,0.06            # a smoke run of a few minutes

A step is millions of events (clinical entries; 200 per resident, so 10M is 50,000
residents), from the county of bench/read_county.py (four institutions, each resident's
record spread over all four, the separate consent). The exchange runs as `hie up` with
``--gateways`` gateway processes, on the embedded PostgreSQL and NATS (or HIE_DATABASE_URL /
HIE_NATS_URL, where the run makes its own database and streams and drops them after). At each
step, before any clock starts, worker processes sign the step's envelopes into spool files;
then, measured:

- growth: the envelopes up to the step's size published flat out, one process per
  institution, timed until the projection has applied the whole ledger; then, once the
  growth's autovacuum is over, a fixed-size batch (``--batch`` events, the same at every
  step) the same way: the ingest figure;
- lag at ``--rate`` events/s for ``--rate-seconds`` right after (autovacuum of what was just
  written usually runs then; sampled, and said when it did not), and again once autovacuum is
  over;
- after VACUUM ANALYZE: `$everything` p50/p99 at ``--read-rate`` req/s and peak req/s on
  ``--read-connections`` closed loops for residents spread over the whole county, and patient
  lookup by resident ID, through the load generator process (bench/read_client.py);
- `hie audit verify` time, the database's and JetStream's bytes per million events, and
  `hie projections rebuild` events/s (the exchange keeps running and replays the ledger);
- peak RSS of `hie up`, each gateway, the PostgreSQL postmaster, nats-server and the largest
  PostgreSQL backend by its own memory (its RSS less the shared buffer pool it maps, which is
  one cache of configured size, reported once as ``shared_buffers_mb``), sampled throughout.

A step that would not fit on the free disk (estimated from the bytes per event so far, a
conservative prior before the first) is skipped and said so. The machine's raw figures
(PostgreSQL round trips and commits, the ledger library's and COPY's rows/s, JetStream
publish and fetch) are measured in the same run. The parts: ``bench/scale_county.py``,
``bench/scale_step.py``, ``bench/scale_watch.py``, ``bench/scale_report.py``.

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
import multiprocessing
import os
import shutil
import signal
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil

from bench import logs
from bench.cleanup import drop_what_the_run_made
from bench.ingest_report import print_errors
from bench.read_load import Processes, start_hie_up
from bench.scale_report import print_report
from bench.scale_run import raw_figures, register, run_steps
from bench.scale_step import Run

INTERRUPTED: list[bool] = []


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.envelope import new_private_key, private_key_pem
    from exchange.auth.tokens import TokenIssuer
    from exchange.servers.embedded import EmbeddedServers
    from exchange.settings import load_settings

    task = asyncio.current_task()
    assert task is not None

    def interrupt() -> None:
        INTERRUPTED.append(True)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, interrupt)
    work = Path(tempfile.mkdtemp(prefix="hie-scale-bench-"))
    procs = Processes()
    servers = None
    db_url, nats_url = os.environ.get("HIE_DATABASE_URL"), os.environ.get("HIE_NATS_URL")
    consortium = f"s{uuid.uuid4().hex[:8]}"
    executor = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    pool = None
    try:
        if not (db_url and nats_url):
            servers = EmbeddedServers(work / "servers")
            db_url, nats_url = servers.start()
        assert db_url and nats_url
        base = db_url.rsplit("/", 1)[0]
        db_url = f"{base}/{consortium}"
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute(f'CREATE DATABASE "{consortium}"')
        await admin.close()
        env = {
            **os.environ,
            "HIE_DATA_DIR": str(work / "data"),
            "HIE_CONSORTIUM": consortium,
            "HIE_DATABASE_URL": db_url,
            "HIE_NATS_URL": nats_url,
            "HIE_HTTP_PORT": "0",
            "HIE_GATEWAY_PROCESSES": str(args.gateways),
        }
        settings = load_settings(env)  # generates the installation's secrets into the data dir
        keys = {code: new_private_key() for code in args.institutions}
        await register(db_url, settings, keys)
        print("raw figures of this machine ...", flush=True)
        raw = await raw_figures(base, consortium, nats_url, args)

        up, http_url = await start_hie_up(env, work / "hie-up.log", procs)
        await asyncio.sleep(2.0)  # the gateways start beside it
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
        shared_buffers_mb = await pool.fetchval(
            "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings WHERE name = 'shared_buffers'"
        )
        token, _ = TokenIssuer(settings.secrets.token_key, settings.profile).issue(
            person="bench-doctor-chen",
            institution=args.institutions[0],
            role="physician",
            now=datetime.now(UTC),
            ttl=timedelta(hours=12),
        )
        host, port = http_url.removeprefix("http://").rsplit(":", 1)
        server_procs = {}
        if servers is not None:
            for name, server in (("postgres", servers.postgres), ("nats", servers.nats)):
                if server.proc is not None:
                    server_procs[name] = psutil.Process(server.proc.pid)
        run = Run(
            args=args,
            env=env,
            db_url=db_url,
            nats_url=nats_url,
            consortium=consortium,
            work=work,
            keys_pem={code: private_key_pem(k) for code, k in keys.items()},
            procs=procs,
            pool=pool,
            executor=executor,
            servers=server_procs,
            up=psutil.Process(up.pid),
            http=(host, int(port)),
            headers={
                "Authorization": f"Bearer {token}",
                "X-Purpose-Of-Use": "TREAT",
                "Accept": "application/fhir+json",
            },
        )
        jetstream_dir = work / "servers" / "nats" / "jetstream" if servers is not None else None
        try:
            steps, skipped, peak_run = await run_steps(run, server_procs, jetstream_dir)
        except Exception:
            print_errors(work / "hie-up.log")  # the gateways' side of what went wrong
            raise
        errors = [logs.line_of(r) for r in logs.at_level(work / "hie-up.log", "ERROR")]
        # What the exchange warned of, by kind (numbers masked): retries, slow saves ...
        warnings = logs.warnings_by_kind(work / "hie-up.log")
        print_errors(work / "hie-up.log")
    finally:
        if pool is not None:
            await pool.close()
        procs.stop_all()
        executor.shutdown(cancel_futures=True)
        if servers is not None:
            servers.stop()
        elif db_url and nats_url:  # servers of the user's: leave them as they were found
            await drop_what_the_run_made(db_url, nats_url, consortium)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "args": args,
        "steps": steps,
        "skipped": skipped,
        "raw": raw,
        "peak_rss_run": peak_run,
        "shared_buffers_mb": shared_buffers_mb,
        "server_errors": len(errors),
        "first_server_error": errors[0][:300] if errors else None,
        "server_warnings": warnings,
    }


def step_list(text: str) -> list[float]:
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("give steps in millions of events, like 1,3,10") from None
    if not steps or min(steps) <= 0 or steps != sorted(set(steps)):
        raise argparse.ArgumentTypeError("give increasing steps in millions, like 1,3,10")
    return steps


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--steps", type=step_list, default=[1.0, 3.0, 10.0], help="millions of events")
    p.add_argument("--entries", type=int, default=200, help="clinical entries per resident")
    p.add_argument("--gateways", type=int, default=2, help="gateway processes beside hie up")
    p.add_argument("--per-submission", type=int, default=500, help="items per envelope (≤ 500)")
    p.add_argument(
        "--batch", type=int, default=0, help="the measured batch's events (default: 250,000, "
        "or a quarter of the smallest step if less)",
    )  # fmt: skip
    p.add_argument("--rate", type=int, default=5000, help="events/s offered in the lag phases")
    p.add_argument(
        "--rate-seconds", type=float, default=0.0,
        help="each lag phase's length (default 20 s, less when the smallest step is small)",
    )  # fmt: skip
    p.add_argument("--rate-per-submission", type=int, default=100)
    p.add_argument(
        "--autovacuum-wait", type=float, default=0.0,
        help="how long the first lag phase waits for autovacuum to begin (default 75 s, "
        "10 s when the smallest step is small)",
    )  # fmt: skip
    p.add_argument("--read-rate", type=float, default=50.0, help="$everything requests/s")
    p.add_argument(
        "--read-seconds", type=float, default=0.0,
        help="the read rate phase's length (default 20 s, 5 s when the smallest step is small)",
    )  # fmt: skip
    p.add_argument("--read-connections", type=int, default=16, help="closed loops for the peak")
    p.add_argument("--read-patients", type=int, default=500, help="residents sampled for reads")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="envelope builders")
    p.add_argument("--publisher", help=argparse.SUPPRESS)
    p.add_argument("--institution", help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.publisher:
        return args
    if args.entries < 4 or not 1 <= args.per_submission <= 500 or args.rate <= 0:
        p.error("--entries must be at least 4, --per-submission 1..500, --rate positive")
    smallest = args.steps[0] * 1e6
    args.batch = args.batch or int(min(250_000, smallest / 4))
    args.rate_seconds = args.rate_seconds or max(2.0, min(20.0, smallest / args.rate / 10))
    args.read_seconds = args.read_seconds or (20.0 if smallest >= 500_000 else 5.0)
    args.autovacuum_wait = args.autovacuum_wait or (75.0 if smallest >= 500_000 else 10.0)
    from bench.read_county import INSTITUTIONS

    args.institutions = [code for code, _, _ in INSTITUTIONS]
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.publisher:
        from bench.scale_county import publisher_main

        publisher_main(arguments)
        sys.exit(0)
    try:
        figures = asyncio.run(main(arguments))
    except BaseException as exc:
        if not (INTERRUPTED or isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))):
            raise
        print(
            "interrupted: everything this run started is stopped and its files removed",
            file=sys.stderr,
        )
        sys.exit(130)
    print_report(figures)
