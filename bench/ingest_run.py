"""One topology's share of an ingest benchmark run: the county's institutions registered, the
raw figures on the same servers, `hie up` with its gateway processes, phase 1 at full speed,
the fixed-rate window while autovacuum of what phase 1 filled runs and again once it is over,
the bytes stored per event, and (if asked) a projection rebuild."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.autovacuum import Autovacuum, autovacuum_done, autovacuum_start, table_stats
from bench.ingest_county import County, read_envelopes
from bench.ingest_load import Receipts, Rss, cpu_seconds, wait_position, wait_visible
from bench.ingest_raw import raw_copy, raw_jetstream, raw_ledger_limit
from bench.ingest_report import build_figures, print_errors
from bench.ingest_topology import Servers
from bench.ingest_window import measure_window
from bench.read_load import Processes, start_hie_up

HIE = str(Path(sys.executable).with_name("hie"))
SCRIPT = str(Path(__file__).resolve().with_name("ingest.py"))


async def register(servers: Servers, county: County) -> None:
    """The county's institutions and their keys in the ledger, as `hie institution add`
    would leave them (the bench's publishers use the exchange's NATS user)."""
    from adapters.envelope import public_key_b64
    from exchange.ingest.ledger import Ledger
    from exchange.settings import load_settings

    settings = load_settings(servers.env)  # generates the installation's secrets
    ledger = await asyncio.to_thread(
        Ledger,
        servers.database_url,
        settings.secrets.ledger_cipher_key,
        settings.secrets.pseudonym_key,
        crypto_profile=settings.crypto_profile,
    )
    try:
        for inst in county.institutions:
            await asyncio.to_thread(
                ledger.register_institution,
                inst,
                f"机构{inst}",
                "township_health_centre",
                public_key_b64(county.keys[inst]),
            )
    finally:
        await asyncio.to_thread(ledger.close)


async def raw_figures(servers: Servers, county: County, per_submission: int) -> dict[str, Any]:
    """The ledger's library, COPY and JetStream on the same servers (their own scratch
    tables and stream), with the run's events."""
    envelopes = read_envelopes(county.files[county.institutions[0]])
    sample_items = [i for data in envelopes[:200] for i in json.loads(data)["events"]]
    print(f"[{servers.kind}] raw figures ...", flush=True)
    return {
        "ledger_limit": await asyncio.to_thread(
            raw_ledger_limit, servers.database_url, sample_items
        ),
        "copy_rate": await raw_copy(servers.database_url, sample_items),
        "js_rates": await raw_jetstream(servers.nats, envelopes[:500], per_submission),
    }


async def run_on(servers: Servers, county: County, args: Any, work: Path) -> dict[str, Any]:
    """Everything the benchmark measures, on one topology; its figures."""
    say = f"[{servers.kind}]"
    consortium = servers.env["HIE_CONSORTIUM"]
    await register(servers, county)
    raw = await raw_figures(servers, county, args.per_submission)

    started = Processes()
    try:
        up_proc, _ = await start_hie_up(servers.env, work / "hie-up.log", started)
        await asyncio.sleep(2.0)
        up = psutil.Process(up_proc.pid)
        watched = {f"hie up (pid {up.pid})": up}
        watched |= {
            f"hie gateway (pid {c.pid})": c
            for c in up.children()
            if "gateway" in " ".join(c.cmdline())
        }
        watched |= servers.processes
        rss = Rss(watched)
        stop = asyncio.Event()
        sampler = asyncio.create_task(rss.sample(stop))
        pool = await asyncpg.create_pool(servers.database_url, min_size=1, max_size=5)
        # Autovacuum throughout, for the timeline: what it worked on, and when.
        t0 = time.monotonic()
        whole = Autovacuum(pool, since=t0)
        whole_task = asyncio.create_task(whole.run(stop))
        marks: dict[str, float] = {}
        try:
            cpu_before = {n: cpu_seconds(p, n.startswith("server")) for n, p in watched.items()}

            # Phase 1: everything, as fast as it goes.
            print(
                f"{say} phase 1: {county.events:,} events in {county.submissions:,} "
                "submissions, full speed ...",
                flush=True,
            )
            elapsed = await phase_one(servers, county, pool, consortium)
            marks["phase1_end"] = time.monotonic() - t0
            due = await table_stats(pool)
            cpu = {
                n: cpu_seconds(p, n.startswith("server")) - cpu_before[n]
                for n, p in watched.items()
                if p.is_running()
            }

            # Phase 2: the fixed rate at once, while PostgreSQL's autovacuum of the tables
            # phase 1 filled runs (its launcher visits a database once a minute: waited for if
            # no worker is busy yet), then again once every worker is done.
            began = await autovacuum_start(pool, args.autovacuum_wait)
            print(
                f"{say} phase 2a: {args.rate:,} events/s offered for {args.rate_seconds:g} s "
                + (
                    f"with autovacuum at work ({began:.0f} s after phase 1) ..."
                    if began is not None
                    else f"(no autovacuum began within {args.autovacuum_wait:g} s) ..."
                ),
                flush=True,
            )
            marks["during_from"] = time.monotonic() - t0
            during = await measure_window(
                servers.nats, consortium, pool, county.rate_during, args, watched
            )
            marks["during_to"] = time.monotonic() - t0
            settled = await autovacuum_done(pool, timeout=1800)
            print(
                f"{say} phase 2b: {args.rate:,} events/s offered for {args.rate_seconds:g} s "
                f"(after {settled:.0f} s more of autovacuum) ...",
                flush=True,
            )
            marks["after_from"] = time.monotonic() - t0
            after = await measure_window(
                servers.nats, consortium, pool, county.rate_after, args, watched
            )
            marks["after_to"] = time.monotonic() - t0
            stored = await stored_bytes(servers, pool, consortium)
            rebuild = await measure_rebuild(pool, servers.env, up) if args.rebuild else None
        finally:
            stop.set()
            await sampler
            await whole_task
            await pool.close()
    finally:
        started.stop_all()
    print_errors(work / "hie-up.log")
    return (rebuild or {}) | build_figures(
        args,
        topology=servers.kind,
        events=county.events,
        subs=county.submissions,
        institutions=len(county.institutions),
        elapsed=elapsed,
        raw=raw,
        began=began,
        settled=settled,
        during=during,
        after=after,
        stored=stored,
        autovacuum={
            "autovacuum_timeline": whole.timeline(),
            "autovacuum_due_after_phase1": due,
            "timeline_marks_s": {k: round(v, 1) for k, v in marks.items()},
        },
        peak=rss.peak,
        cpu=cpu,
    )


async def phase_one(servers: Servers, county: County, pool: asyncpg.Pool, consortium: str) -> float:
    """Every institution publishes its file from a process of its own, as fast as JetStream
    takes it; the seconds until the last submission is visible in the projection."""
    receipts = Receipts()
    receipts.expected = county.submissions
    listener = await servers.nats.connect("receipts")
    await listener.subscribe(f"hie.{consortium}.receipt.*", cb=receipts.on_msg)
    start = time.monotonic()
    publishers = [
        subprocess.Popen(
            [
                sys.executable,
                SCRIPT,
                "--publisher",
                str(county.files[inst]),
                *servers.nats.argv(),
                "--subject",
                f"hie.{consortium}.submit.{inst}",
            ]
        )
        for inst in county.institutions
    ]
    try:
        end = await wait_visible(pool, receipts, timeout=3600)
    finally:
        await listener.close()
        for p in publishers:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    return end - start


# The exchange's tables with their indexes and TOAST (not the raw figures' scratch tables, nor
# the catalogs of an empty database).
_TABLE_BYTES = (
    "SELECT sum(pg_total_relation_size(oid)) FROM pg_class WHERE relkind = 'r' "
    "AND relnamespace = 'public'::regnamespace AND relname NOT LIKE 'rawledger%'"
)


async def stored_bytes(servers: Servers, pool: asyncpg.Pool, consortium: str) -> dict[str, int]:
    """The consortium's tables and its streams' bytes once the run is in (one copy of each:
    the standby and each stream replica hold as much again; WAL not counted)."""
    from exchange.servers.nats import stream_name

    nc = await servers.nats.connect("sizes")
    try:
        streams = await nc.jetstream().streams_info()
    finally:
        await nc.close()
    prefix = stream_name(consortium, "")
    return {
        "database_bytes": int(await pool.fetchval(_TABLE_BYTES)),
        "jetstream_bytes": sum(
            s.state.bytes for s in streams if (s.config.name or "").startswith(prefix)
        ),
        "stored_events": int(await pool.fetchval("SELECT count(*) FROM ledger_source_records")),
    }


async def replay_workers_gone(up: psutil.Process, timeout: float = 30.0) -> None:
    """Wait until `hie up` has reaped its replay workers (their CPU is then its children's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            alive = [c for c in up.children() if "multiprocessing" in " ".join(c.cmdline())]
        except psutil.Error:
            alive = []
        if not alive:
            return
        await asyncio.sleep(0.1)


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
    await replay_workers_gone(up)
    cpu = cpu_seconds(up, False) - cpu
    again = await pool.fetchval("SELECT count(*) FROM record_entries")
    if again != entries:
        raise RuntimeError(f"the rebuild made {again} entries, not {entries}")
    print(
        f"rebuild: {entries / elapsed:,.0f} entries/s ({elapsed:.1f} s; hie up with its "
        f"replay workers {cpu * 1e6 / entries:.1f} µs CPU per entry)",
        flush=True,
    )
    return {
        "rebuild_s": round(elapsed, 2),
        "rebuild_entries_per_s": round(entries / elapsed),
        "rebuild_up_cpu_us_per_entry": round(cpu * 1e6 / entries, 1),
    }
