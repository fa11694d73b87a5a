"""Read benchmark: `GET /fhir/Patient/<id>/$everything` for patients with ~200 entries from
four institutions, consent decision and durable audit append included, beside this machine's
raw figures for the same kind of work, measured in the same run.

    .venv/bin/python bench/read.py [--patients 200] [--entries 200] [--rate 50] [--seconds 20]
                                   [--connections 8,16,32] [--page-rate 20] [--page-seconds 15]
    .venv/bin/python bench/read.py --patients 20 --seconds 3        # a quick smoke run

The exchange runs as `hie up` in its own process on the embedded PostgreSQL and NATS (or
HIE_DATABASE_URL / HIE_NATS_URL, where the run makes its own database and streams and drops
them after). A county hospital and three township/village institutions register their keys
and submit, through NATS in envelopes of at most 500 items, each resident's record spread
over all four (visits, diagnoses, results, prescriptions, dispensing, procedures,
immunisations, allergies), with the resident's separate consent for treatment across the
consortium; the county hospital's visit gives its physician the care relationship. Once the
projection has applied the whole ledger, the database is vacuumed and analysed (the state
autovacuum would reach; otherwise it runs in the middle of the measurement).

The load generator (bench/read_client.py) is its own process: hand-written keep-alive
HTTP/1.1 over asyncio streams. It first reads every patient once and checks each answer (a
Bundle with the patient and all their entries); then phase A offers a fixed rate on an
open-loop schedule, latency from each request's scheduled time (no coordinated omission);
phase B runs closed loops flat out on 8, 16 and 32 connections. Any answer but 200 counts as
an error, and a sample of answers is checked throughout. CPU is read per process around each
phase (hie up; PostgreSQL and NATS when they are the embedded ones; the load generator), and
so is the CPU the rest of the machine took meanwhile: on a shared machine, other work skews
every figure, and the report says by how much.

Raw figures of this machine: asyncpg `SELECT 1` round trips (one connection, eight, and
through a pool as the exchange queries), single-row INSERT + COMMIT (the durable commit the
audit append waits for), and a bare Starlette "hello" app on the same uvicorn settings under
the same load generator (its socket has TCP_NODELAY, so the figure is the framework's).

Last, the physician's record page (issue 15: `/app/patients/<id>`, signed in by the session
cookie as a browser is) and ``$everything`` beside it, each offered at ``--page-rate`` (20/s)
for ``--page-seconds``, alternating twice; the worse p50 and p99 of each are reported (goal for
the page: p99 ≤ 50 ms).

The parts live beside this script: the county and its seeding in ``bench/read_county.py``,
the raw figures in ``bench/read_raw.py``, the processes and the load in ``bench/read_load.py``,
the targets, the figures and the printed summary in ``bench/read_report.py``.

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
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil

from adapters.envelope import new_private_key, public_key_b64
from bench import logs
from bench.cleanup import drop_what_the_run_made
from bench.read_county import (
    INSTITUTIONS,
    READER,
    county_items,
    projection_caught_up,
    resident_id,
    seed,
    settle,
)
from bench.read_load import Processes, drive, peak_rss_mb, start_hie_up
from bench.read_raw import hello_server_main, raw_postgres
from bench.read_report import build_figures, print_report

INTERRUPTED: list[bool] = []  # set by Ctrl-C or SIGTERM: whatever fails next is not news


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from exchange.auth.tokens import TokenIssuer
    from exchange.ingest.ledger import Ledger
    from exchange.servers.embedded import EmbeddedServers
    from exchange.settings import load_settings

    task = asyncio.current_task()
    assert task is not None

    def interrupt() -> None:
        INTERRUPTED.append(True)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, interrupt)
    work = Path(tempfile.mkdtemp(prefix="hie-read-bench-"))
    procs = Processes()
    servers = None
    db_url, nats_url = os.environ.get("HIE_DATABASE_URL"), os.environ.get("HIE_NATS_URL")
    consortium = f"r{uuid.uuid4().hex[:8]}"
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
            "HIE_GATEWAY_PROCESSES": "0",
        }
        settings = load_settings(env)  # generates the installation's secrets into the data dir

        # The consortium: four institutions with their keys, registered in the ledger.
        keys = {code: new_private_key() for code, _, _ in INSTITUTIONS}
        ledger = await asyncio.to_thread(
            Ledger, db_url, settings.secrets.ledger_cipher_key, settings.secrets.pseudonym_key
        )
        try:
            for code, name, level in INSTITUTIONS:
                await asyncio.to_thread(
                    ledger.register_institution, code, name, level, public_key_b64(keys[code])
                )
            patient_ids = [ledger.patient_id(resident_id(n)) for n in range(args.patients)]
        finally:
            await asyncio.to_thread(ledger.close)

        print("raw figures: PostgreSQL ...", flush=True)
        raw = await raw_postgres(db_url, seconds=2.0)

        # The exchange, then the county's records through NATS.
        up, http_url = await start_hie_up(env, work / "hie-up.log", procs)
        watched = {"hie up": psutil.Process(up.pid)}
        if servers is not None:
            for name, server in (("postgres", servers.postgres), ("nats-server", servers.nats)):
                if server.proc is not None:
                    watched[name] = psutil.Process(server.proc.pid)
        items = county_items(args.patients, args.entries, datetime.now(UTC))
        total_items = sum(len(v) for v in items.values())
        print(
            f"seeding {args.patients} patients × {args.entries} entries over "
            f"{len(INSTITUTIONS)} institutions ({total_items:,} items) through NATS ...",
            flush=True,
        )
        started = time.monotonic()
        submissions = await seed(nats_url, consortium, keys, items, args.per_submission)
        await projection_caught_up(db_url, timeout=600)
        seeded_s = time.monotonic() - started
        await settle(db_url)

        # The reading physician, and what each patient's answer must hold.
        token, _ = TokenIssuer(settings.secrets.token_key, settings.profile).issue(
            person="bench-doctor-chen",
            institution=READER,
            role="physician",
            now=datetime.now(UTC),
            ttl=timedelta(hours=8),
        )
        host, port = http_url.removeprefix("http://").rsplit(":", 1)
        expected = 1 + args.entries  # the Patient and every entry
        seconds = args.seconds
        flat_seconds = args.flat_seconds or max(1.0, seconds / 2)
        phases: list[dict[str, Any]] = [
            {"name": "verify", "kind": "verify"},
            {
                "name": "rate",
                "kind": "rate",
                "rate": args.rate,
                "seconds": seconds,
                "connections": args.rate_connections,
            },
            *(
                {
                    "name": f"flat-{c}",
                    "kind": "flat",
                    "connections": c,
                    "seconds": flat_seconds,
                    "warmup": min(1.0, flat_seconds / 3),
                }
                for c in args.connections
            ),
        ]
        config = {
            "host": host,
            "port": int(port),
            "seed": 7,
            "check_every": args.check_every,
            "headers": {
                "Authorization": f"Bearer {token}",
                "X-Purpose-Of-Use": "TREAT",
                "Accept": "application/fhir+json",
            },
            "requests": [[f"/fhir/Patient/{pid}/$everything", expected] for pid in patient_ids],
            "phases": phases,
        }
        print(
            f"load: verify every patient, then {args.rate}/s for {seconds:g} s, then flat out "
            f"on {', '.join(map(str, args.connections))} connections ({flat_seconds:g} s each)"
            " ...",
            flush=True,
        )
        rss: dict[str, float] = {}
        results = await drive(config, watched, procs, rss)
        verify = results["verify"]
        if verify["errors"]:
            raise RuntimeError(
                f"the exchange did not answer every patient with their whole "
                f"record: {verify['error_kinds']}"
            )
        pages = await page_phases(args, config, token, patient_ids, watched, procs, rss)
        hie_rss = peak_rss_mb(watched["hie up"], rss.get("hie up", 0.0))
        server_errors = len(logs.at_level(work / "hie-up.log", "ERROR"))
        up.terminate()
        up.wait(30)

        # The same load generator against a bare Starlette app.
        print("raw figures: bare Starlette hello ...", flush=True)
        hello = subprocess.Popen(
            [sys.executable, __file__, "--hello-server"], stdout=subprocess.PIPE
        )
        procs.popen.append(hello)
        assert hello.stdout is not None
        hello_port = int(await asyncio.to_thread(hello.stdout.readline))
        hello_seconds = max(1.0, flat_seconds / 2)
        hello_phases = [
            {
                "name": "hello-rate",
                "kind": "rate",
                "rate": args.rate,
                "seconds": min(seconds, 10.0),
                "connections": args.rate_connections,
            },
            *(
                {
                    "name": f"hello-flat-{c}",
                    "kind": "flat",
                    "connections": c,
                    "seconds": hello_seconds,
                    "warmup": min(1.0, hello_seconds / 3),
                }
                for c in args.connections
            ),
        ]
        hello_results = await drive(
            {
                "host": "127.0.0.1",
                "port": hello_port,
                "requests": [["/hello", None]],
                "check_every": 0,
                "phases": hello_phases,
            },
            {"hello server": psutil.Process(hello.pid)},
            procs,
            {},
        )
        hello.terminate()
        hello.wait(30)
    finally:
        procs.stop_all()
        if servers is not None:
            servers.stop()
        elif db_url and nats_url:  # servers of the user's: leave them as they were found
            await drop_what_the_run_made(db_url, nats_url, consortium)
        shutil.rmtree(work, ignore_errors=True)

    return build_figures(
        args,
        results=results,
        hello_results=hello_results,
        raw=raw,
        expected=expected,
        total_items=total_items,
        submissions=submissions,
        seeded_s=seeded_s,
        server_errors=server_errors,
        hie_rss=hie_rss,
        pages=pages,
    )


async def page_phases(
    args: argparse.Namespace,
    config: dict[str, Any],
    token: str,
    patient_ids: list[Any],
    watched: dict[str, psutil.Process],
    procs: Processes,
    rss: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """The physician's record page (signed in by the session cookie, as a browser is) and the
    ``$everything`` API beside it, each at ``--page-rate``, alternating twice."""
    if args.page_rate <= 0:
        return {}
    print(
        f"pages: the record page and $everything at {args.page_rate:g}/s, "
        f"{args.page_seconds:g} s each, twice ...",
        flush=True,
    )
    page_config = {
        **config,
        "headers": {"Cookie": f"hie_session={token}", "Accept": "text/html"},
        "requests": [[f"/app/patients/{pid}", None] for pid in patient_ids],
    }
    out: dict[str, dict[str, Any]] = {}
    for n in (1, 2):
        for name, chosen in (("api", config), ("page", page_config)):
            phase = {
                "name": f"{name}-{n}",
                "kind": "rate",
                "rate": args.page_rate,
                "seconds": args.page_seconds,
                "connections": args.rate_connections,
            }
            out.update(await drive({**chosen, "phases": [phase]}, watched, procs, rss))
    return out


def connection_counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("give connection counts like 8,16,32") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("give connection counts like 8,16,32")
    return counts


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--entries", type=int, default=200, help="clinical entries per patient")
    p.add_argument("--rate", type=float, default=50.0, help="phase A: requests/s offered")
    p.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="phase A's length; phase B runs half of it per connection count",
    )
    p.add_argument(
        "--flat-seconds",
        type=float,
        default=0.0,
        help="phase B's length per connection count (default: --seconds / 2)",
    )
    p.add_argument(
        "--connections",
        type=connection_counts,
        default=[8, 16, 32],
        help="phase B's connection counts, e.g. 8,16,32",
    )
    p.add_argument(
        "--rate-connections", type=int, default=8, help="phase A's pool of keep-alive connections"
    )
    p.add_argument(
        "--page-rate",
        type=float,
        default=20.0,
        help="the record page and the API beside it at this rate (0: no page phases)",
    )
    p.add_argument("--page-seconds", type=float, default=15.0, help="each page phase's length")
    p.add_argument("--per-submission", type=int, default=500, help="items per envelope (≤ 500)")
    p.add_argument(
        "--check-every",
        type=int,
        default=25,
        help="parse and check every n-th answer of the load phases",
    )
    p.add_argument("--hello-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.hello_server and (
        args.patients < 1
        or args.entries < 1
        or args.rate <= 0
        or args.seconds <= 0
        or not 1 <= args.per_submission <= 500
    ):
        p.error(
            "--patients, --entries, --rate and --seconds must be positive, --per-submission 1..500"
        )
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.hello_server:
        hello_server_main()
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
