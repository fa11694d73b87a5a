"""The scale benchmark's run: the institutions registered, the machine's raw figures (in a
scratch database of their own, dropped after), and the steps one after another, each checked
against the free disk first."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.autovacuum import autovacuum_done, autovacuum_start
from bench.ingest_raw import raw_copy, raw_jetstream, raw_ledger_limit
from bench.ingest_topology import NatsTarget
from bench.read_county import INSTITUTIONS
from bench.read_load import cpu_seconds
from bench.read_raw import raw_postgres
from bench.scale_county import resident_items
from bench.scale_step import (
    Run,
    audit_verify,
    lag_phase,
    publish_flat,
    read_load,
    rebuild,
    settle,
    spool,
)
from bench.scale_watch import Watch, free_bytes, store_bytes, wal_counters, wal_per_event

PRIOR_BYTES_PER_EVENT = 5000  # database + JetStream, before the first step has measured it
SPOOL_BYTES_PER_EVENT = 400  # signed envelopes waiting in the spool
MARGIN = 1.3
SPARE_BYTES = 2 * 2**30


async def register(db_url: str, settings: Any, keys: dict[str, Any]) -> None:
    from adapters.envelope import public_key_b64
    from exchange.ingest.ledger import Ledger

    ledger = await asyncio.to_thread(
        Ledger, db_url, settings.secrets.ledger_cipher_key, settings.secrets.pseudonym_key
    )
    try:
        for code, name, level in INSTITUTIONS:
            await asyncio.to_thread(
                ledger.register_institution, code, name, level, public_key_b64(keys[code])
            )
    finally:
        await asyncio.to_thread(ledger.close)


async def raw_figures(base: str, consortium: str, nats_url: str, args: Any) -> dict[str, Any]:
    """PostgreSQL round trips and commits, the ledger library's and COPY's rows/s, JetStream
    publish and fetch+ack of envelopes like the run's: in a scratch database, dropped after."""
    from adapters.envelope import build_envelope, encode, new_private_key

    scratch = f"{consortium}_raw"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        url = f"{base}/{scratch}"
        now = datetime.now(UTC)
        items = [
            item
            for n in range(10**7, 10**7 + 100)
            for i in range(len(INSTITUTIONS))
            for item in resident_items(i, n, args.entries, now)
        ]
        key = new_private_key()
        per = args.per_submission
        envelopes = [
            encode(
                build_envelope(institution="raw", items=items[i : i + per], key=key, sent_at=now)
            )
            for i in range(0, len(items), per)
        ]
        out: dict[str, Any] = dict(await raw_postgres(url, seconds=2.0))
        out["raw_ledger_events_per_s"] = round(
            await asyncio.to_thread(raw_ledger_limit, url, items[:4000])
        )
        out["raw_copy_rows_per_s"] = round(await raw_copy(url, items))
        js = await raw_jetstream(NatsTarget(nats_url), envelopes, len(items) / len(envelopes))
        out |= {f"raw_jetstream_{k}": round(v) for k, v in js.items()}
        return out
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        await admin.close()


def exchange_cpu(run: Run, server_procs: dict[str, psutil.Process]) -> float:
    """CPU seconds of `hie up` with its gateways, and of the servers when embedded."""
    assert run.up is not None
    return cpu_seconds(run.up) + sum(cpu_seconds(p) for p in server_procs.values())


async def run_steps(
    run: Run, server_procs: dict[str, psutil.Process], jetstream_dir: Path | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    args = run.args
    assert run.up is not None
    watch = Watch(run.up, server_procs.get("postgres"), server_procs.get("nats"))
    stop = asyncio.Event()
    sampler = asyncio.create_task(watch.run(stop))
    steps: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    residents = 0  # residents 0 … residents-1 hold their whole record
    items = 0  # every item submitted: the clinical entries, registrations and consents
    bytes_per_event: float | None = None
    per_resident = args.entries + len(INSTITUTIONS) + 1  # registrations and the consent
    batch_res = max(1, math.ceil(args.batch / args.entries))
    rate_res = math.ceil(args.rate * args.rate_seconds / args.entries) + 1
    try:
        for step in args.steps:
            target = int(step * 1e6) // args.entries
            new_events = (max(0, target - residents) + batch_res + 2 * rate_res) * per_resident
            per_event = bytes_per_event or PRIOR_BYTES_PER_EVENT
            need = int(new_events * (per_event * MARGIN + SPOOL_BYTES_PER_EVENT) + SPARE_BYTES)
            free = free_bytes(run.work)
            if need > free:
                why = (
                    f"needs ~{need / 2**30:.1f} GiB ({new_events:,} events × "
                    f"{per_event:,.0f} bytes each × {MARGIN} + spool + "
                    f"{SPARE_BYTES / 2**30:.0f} GiB), {free / 2**30:.1f} GiB free"
                )
                run.say(f"step {step:g}M SKIPPED: {why}")
                skipped.append({"step_millions": step, "reason": why})
                continue
            watch.next_step()
            fig: dict[str, Any] = {"step_millions": step}
            run.say(
                f"step {step:g}M: signing envelopes for residents {residents:,} → {target:,}, "
                f"the batch and the lag phases (not timed) ..."
            )
            started = time.monotonic()
            grow = await spool(run, "grow", residents, max(residents, target), args.per_submission)
            residents = max(residents, target)
            batch = await spool(run, "batch", residents, residents + batch_res, args.per_submission)
            residents += batch_res
            lag_a = await spool(
                run, "lag-a", residents, residents + rate_res, args.rate_per_submission
            )
            residents += rate_res
            lag_b = await spool(
                run, "lag-b", residents, residents + rate_res, args.rate_per_submission
            )
            residents += rate_res
            items += grow["items"] + batch["items"] + lag_a["items"] + lag_b["items"]
            fig["spool_s"] = round(time.monotonic() - started, 1)
            if grow["submissions"]:
                run.say(f"  growth: {grow['items']:,} events flat out ...")
                wal = await wal_counters(run.pool)
                took = await publish_flat(run, grow)
                fig["growth_wal"] = wal_per_event(wal, await wal_counters(run.pool), grow["items"])
                fig["growth_events"] = grow["items"]
                fig["growth_events_per_s"] = round(grow["items"] / took)
            # The growth's own autovacuum (millions of rows at once, which no county sends)
            # is let finish first: the batch measures ingest into a database of this size.
            fig["growth_autovacuum_s"] = round(await autovacuum_done(run.pool, timeout=3600))
            run.say(
                f"  batch: {batch['items']:,} events flat out "
                f"(after {fig['growth_autovacuum_s']} s of the growth's autovacuum) ..."
            )
            cpu, wal = exchange_cpu(run, server_procs), await wal_counters(run.pool)
            took = await publish_flat(run, batch)
            cpu = exchange_cpu(run, server_procs) - cpu
            fig["ingest_wal"] = wal_per_event(wal, await wal_counters(run.pool), batch["items"])
            fig["batch_events"] = batch["items"]
            fig["ingest_events_per_s"] = round(batch["items"] / took)
            fig["ingest_cpu_ms_per_1000_events"] = round(1e6 * cpu / batch["items"], 1)
            began = await autovacuum_start(run.pool, args.autovacuum_wait)
            run.say(
                f"  lag at {args.rate:,}/s for {args.rate_seconds:g} s, "
                + (
                    f"autovacuum at work since {began:.0f} s after the batch ..."
                    if began is not None
                    else f"no autovacuum began within {args.autovacuum_wait:g} s of the batch ..."
                )
            )
            lag_during = await lag_phase(run, lag_a)
            fig["lag_during"] = {
                **lag_during,
                "autovacuum_began_s": None if began is None else round(began, 1),
            }
            waited = await autovacuum_done(run.pool, timeout=3600)
            run.say(f"  autovacuum over after {waited:.0f} s; lag again ...")
            lag_after = await lag_phase(run, lag_b)
            fig["lag_after"] = {**lag_after, "autovacuum_waited_s": round(waited)}
            fig["vacuum_analyze_s"] = round(await settle(run), 1)
            fig["residents"] = residents
            fig["events"] = residents * args.entries
            fig["ledger_events"] = items
            fig["ledger_submissions"] = int(
                await run.pool.fetchval("SELECT max(notification_id) FROM ledger_events")
            )
            sizes = await store_bytes(run.pool, run.nats_url, run.consortium, jetstream_dir)
            fig |= sizes
            millions = items / 1e6
            fig["database_bytes_per_million_events"] = round(sizes["database_bytes"] / millions)
            js_bytes = sizes.get("jetstream_disk_bytes", sizes["jetstream_stream_bytes"])
            fig["jetstream_bytes_per_million_events"] = round(js_bytes / millions)
            bytes_per_event = (sizes["database_bytes"] + js_bytes) / items
            run.say(f"  reads over {residents:,} residents ...")
            fig |= await read_load(run, residents)
            run.say("  hie audit verify ...")
            fig |= await audit_verify(run)
            run.say(f"  projection rebuild of {items:,} ledger events ...")
            fig |= await rebuild(run, items)
            fig["peak_rss_mb"] = {k: round(v, 1) for k, v in sorted(watch.peak.items())}
            steps.append(fig)
            run.say(
                f"step {step:g}M done: ingest {fig['ingest_events_per_s']:,}/s, read p99 "
                f"{fig['read_p99_ms']} ms, peak {fig['read_peak_rps']}/s, rebuild "
                f"{fig['rebuild_events_per_s']:,}/s, audit verify {fig['audit_verify_s']} s"
            )
    finally:
        stop.set()
        await sampler
    return steps, skipped, {k: round(v, 1) for k, v in sorted(watch.peak_run.items())}
