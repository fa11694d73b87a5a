"""The scale benchmark's phases, each used once per step: envelopes spooled by worker
processes before a clock starts, published flat out by one process per institution until the
projection has applied everything, the lag at a fixed offered rate (with autovacuum watched),
the read load through the load generator process, `hie audit verify` and the projection
rebuild, each timed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import nats
import psutil

from bench.autovacuum import Autovacuum
from bench.ingest_county import submission_id
from bench.ingest_load import Receipts, fixed_rate, quantile, wait_visible
from bench.ingest_topology import NatsTarget
from bench.read_county import INSTITUTIONS
from bench.read_load import Processes, drive
from bench.scale_county import read_all, resident_id, spool_chunk

HIE = str(Path(sys.executable).with_name("hie"))
SCALE = str(Path(__file__).resolve().with_name("scale.py"))
CHUNK = 500  # residents per worker task


@dataclass
class Run:
    """What every phase of the run shares."""

    args: Any
    env: dict[str, str]
    db_url: str
    nats_url: str
    consortium: str
    work: Path
    keys_pem: dict[str, bytes]
    procs: Processes
    pool: asyncpg.Pool
    executor: ProcessPoolExecutor
    servers: dict[str, psutil.Process] = field(default_factory=dict)  # when embedded
    up: psutil.Process | None = None
    http: tuple[str, int] = ("127.0.0.1", 0)
    headers: dict[str, str] = field(default_factory=dict)
    patient_ids: dict[int, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f} s] {text}", flush=True)


async def spool(run: Run, name: str, first: int, last: int, per_submission: int) -> dict[str, Any]:
    """Residents first..last-1 signed into envelopes in ``<work>/<name>`` by the worker
    processes (the event loop only waits)."""
    path = run.work / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    now = datetime.now(UTC).isoformat()
    loop = asyncio.get_running_loop()
    jobs = [
        loop.run_in_executor(
            run.executor,
            spool_chunk,
            str(path),
            i,
            a,
            min(last, a + CHUNK),
            run.args.entries,
            per_submission,
            run.keys_pem,
            now,
        )
        for i, a in enumerate(range(first, last, CHUNK))
    ]
    done = await asyncio.gather(*jobs)
    return {
        "path": path,
        "residents": last - first,
        "submissions": sum(d[0] for d in done),
        "items": sum(d[1] for d in done),
        "bytes": sum(d[2] for d in done),
    }


async def publish_flat(run: Run, spooled: dict[str, Any]) -> float:
    """Every spooled envelope published flat out, one process per institution; the seconds
    from the first publish until the projection has applied the ledger's last position."""
    receipts = Receipts()
    receipts.expected = spooled["submissions"]
    listener = await nats.connect(run.nats_url)
    try:
        await listener.subscribe(f"hie.{run.consortium}.receipt.*", cb=receipts.on_msg)
        start = time.monotonic()
        publishers = [
            subprocess.Popen(
                [
                    sys.executable,
                    SCALE,
                    "--publisher",
                    str(spooled["path"]),
                    "--institution",
                    inst,
                    "--nats-url",
                    run.nats_url,
                    "--subject",
                    f"hie.{run.consortium}.submit.{inst}",
                ]
            )
            for inst, _, _ in INSTITUTIONS
        ]
        run.procs.popen += publishers
        progress = asyncio.create_task(report_progress(run, receipts))
        try:
            end = await wait_visible(run.pool, receipts, timeout=7200)
        finally:
            progress.cancel()
    finally:
        await listener.close()
    for p in publishers:
        await asyncio.to_thread(p.wait)
        if p.returncode:
            raise RuntimeError(f"a publisher exited with status {p.returncode}")
    if receipts.other:
        raise RuntimeError(
            f"{len(receipts.other)} submission(s) were not accepted: {receipts.refusals()}"
        )
    shutil.rmtree(spooled["path"], ignore_errors=True)
    return end - start


async def report_progress(run: Run, receipts: Receipts, every: float = 30.0) -> None:
    """A line every ``every`` seconds while a long phase runs."""
    while True:
        await asyncio.sleep(every)
        at = await run.pool.fetchval(
            "SELECT position FROM projection_position WHERE name = 'patient_record'"
        )
        run.say(
            f"    {receipts.accepted:,} of {receipts.expected:,} submissions receipted; "
            f"projection at ledger position {at:,}"
        )


async def lag_phase(run: Run, spooled: dict[str, Any]) -> dict[str, Any]:
    """The fixed offered rate over the spooled envelopes, autovacuum watched meanwhile;
    publish → visible p50/p99 per submission."""
    envelopes = {inst: read_all(spooled["path"], inst) for inst, _, _ in INSTITUTIONS}
    watch, stop = Autovacuum(run.pool), asyncio.Event()
    watcher = asyncio.create_task(watch.run(stop))
    try:
        lags, to_receipt = await fixed_rate(
            NatsTarget(run.nats_url),
            run.consortium,
            run.pool,
            envelopes,
            run.args.rate,
            run.args.rate_seconds,
            run.args.rate_per_submission,
        )
    finally:
        stop.set()
        await watcher
    # What the rate phase left unsent (it sends rate × seconds, institutions interleaved):
    # sent now, untimed, so that every resident holds the whole record.
    sent = {submission_id(data) for data in await asyncio.to_thread(sent_envelopes, run, envelopes)}
    rest = spooled["path"] / "rest"
    rest.mkdir()
    subs = 0
    for inst, datas in envelopes.items():
        with (rest / f"000000.{inst}.env").open("wb") as out:
            for data in datas:
                if submission_id(data) not in sent:
                    out.write(struct.pack(">I", len(data)) + data)
                    subs += 1
    if subs:
        await publish_flat(run, {"path": rest, "submissions": subs})
    shutil.rmtree(spooled["path"], ignore_errors=True)
    return {
        "submissions": len(lags),
        "lag_p50_s": round(quantile(lags, 0.5), 3),
        "lag_p99_s": round(quantile(lags, 0.99), 3),
        "receipt_p99_s": round(quantile(to_receipt, 0.99), 3),
        **watch.figures(),
    }


def sent_envelopes(run: Run, envelopes: dict[str, list[bytes]]) -> list[bytes]:
    """The envelopes bench/ingest_load.fixed_rate sends: institutions interleaved, the first
    rate × seconds events' worth."""
    order = [data for group in zip(*envelopes.values(), strict=False) for data in group]
    return order[: int(run.args.rate * run.args.rate_seconds / run.args.rate_per_submission)]


def patient_path(run: Run, n: int) -> str:
    return f"/fhir/Patient/{run.patient_ids[n]}/$everything"


async def read_load(run: Run, residents: int) -> dict[str, Any]:
    """`$everything` for residents spread over the whole county: each sampled one read and
    checked, then the rate phase and the closed loops; then patient lookups at the rate."""
    from domain.identity import RESIDENT_ID_SYSTEM

    args = run.args
    count = min(args.read_patients, residents)
    sample = sorted({round(i * (residents - 1) / max(1, count - 1)) for i in range(count)})
    missing = [n for n in sample if n not in run.patient_ids]
    if missing:
        from exchange.ingest.ledger import Ledger
        from exchange.settings import load_settings

        secrets = load_settings(run.env).secrets
        ledger = await asyncio.to_thread(
            Ledger, run.db_url, secrets.ledger_cipher_key, secrets.pseudonym_key
        )
        try:
            for n in missing:
                run.patient_ids[n] = str(ledger.patient_id(resident_id(n)))
        finally:
            await asyncio.to_thread(ledger.close)
    assert run.up is not None
    watched = {"hie up": run.up, **run.servers}
    host, port = run.http
    base = {"host": host, "port": port, "seed": 7, "check_every": 25, "headers": run.headers}
    expected = 1 + args.entries
    everything = await drive(
        {
            **base,
            "requests": [[patient_path(run, n), expected] for n in sample],
            "phases": [
                {"name": "verify", "kind": "verify"},
                {
                    "name": "rate",
                    "kind": "rate",
                    "rate": args.read_rate,
                    "seconds": args.read_seconds,
                    "connections": 8,
                },
                {
                    "name": "flat",
                    "kind": "flat",
                    "connections": args.read_connections,
                    "seconds": max(1.0, args.read_seconds / 2),
                    "warmup": 1.0,
                },
            ],
        },
        watched,
        run.procs,
        {},
    )
    if everything["verify"]["errors"]:
        raise RuntimeError(
            f"not every sampled patient came back whole: {everything['verify']['error_kinds']}"
        )
    system = quote(RESIDENT_ID_SYSTEM, safe="")
    lookup = await drive(
        {
            **base,
            "requests": [
                [f"/fhir/Patient?identifier={system}%7C{resident_id(n)}", 1] for n in sample
            ],
            "phases": [
                {"name": "lookup-verify", "kind": "verify"},
                {
                    "name": "lookup",
                    "kind": "rate",
                    "rate": args.read_rate,
                    "seconds": max(1.0, args.read_seconds / 2),
                    "connections": 8,
                },
            ],
        },
        watched,
        run.procs,
        {},
    )
    if lookup["lookup-verify"]["errors"]:
        raise RuntimeError(
            f"a lookup did not find its patient: {lookup['lookup-verify']['error_kinds']}"
        )
    rate, flat, found = everything["rate"], everything["flat"], lookup["lookup"]
    return {
        "read_patients": len(sample),
        "read_p50_ms": rate["p50_ms"],
        "read_p99_ms": rate["p99_ms"],
        "read_rate_errors": rate["errors"],
        "read_peak_rps": flat["rps"],
        "read_peak_p99_ms": flat["p99_ms"],
        "read_peak_errors": flat["errors"],
        "read_cpu_ms_per_request": round(
            1000 * flat["server_cpu_s"]["hie up"] / max(1, flat["requests"]), 2
        ),
        "read_cpu_ms_per_request_with_servers": round(
            1000 * sum(flat["server_cpu_s"].values()) / max(1, flat["requests"]), 2
        ),
        "read_other_share": flat["other_share"],
        "lookup_p50_ms": found["p50_ms"],
        "lookup_p99_ms": found["p99_ms"],
        "lookup_errors": found["errors"],
    }


async def hie(run: Run, *command: str) -> tuple[float, str]:
    """Run a `hie` command against the run's exchange; (seconds, its output)."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        HIE,
        *command,
        env=run.env,
        cwd=run.work,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    took = time.monotonic() - start
    text = out.decode(errors="replace")
    if proc.returncode:
        tail = "\n".join(text.splitlines()[-10:])
        raise RuntimeError(f"hie {' '.join(command)} failed:\n{tail}")
    return took, text


async def audit_verify(run: Run) -> dict[str, Any]:
    """`hie audit verify`'s time; a log it finds NOT intact is a finding of the run, printed
    and kept in the figures, and the run goes on."""
    try:
        took, text = await hie(run, "audit", "verify")
    except RuntimeError as exc:
        print(f"  !! {exc}", flush=True)
        return {"audit_verify_s": None, "audit_records": 0, "audit_verify_failed": str(exc)}
    found = re.search(r"intact: (\d+) records", text)
    return {"audit_verify_s": round(took, 2), "audit_records": int(found.group(1)) if found else 0}


async def rebuild(run: Run, events: int) -> dict[str, Any]:
    """`hie projections rebuild` with the exchange running; the seconds until it has
    replayed the whole ledger (``events`` items), and events/s from its first progress (the
    running exchange notices the rebuild at its next poll: that wait is given apart)."""
    end = int(await run.pool.fetchval("SELECT max(notification_id) FROM ledger_events"))
    start = time.monotonic()
    await hie(run, "projections", "rebuild")
    first = None
    while True:
        at = await run.pool.fetchval(
            "SELECT position FROM projection_position WHERE name = 'patient_record'"
        )
        if first is None and at:
            first = time.monotonic()
        if at is not None and at >= end:
            break
        if time.monotonic() - start > 7200:
            raise RuntimeError("the projection did not replay the ledger in two hours")
        await asyncio.sleep(0.02)
    done = time.monotonic()
    replay = done - (first or start)
    return {
        "rebuild_s": round(done - start, 2),
        "rebuild_wait_before_replay_s": round((first or start) - start, 2),
        "rebuild_submissions": end,
        "rebuild_events_per_s": round(events / max(replay, 1e-3)),
    }


async def settle(run: Run) -> float:
    """VACUUM ANALYZE, as bench/read_county.settle (the reads then meet the state autovacuum
    leaves); its seconds."""
    start = time.monotonic()
    async with run.pool.acquire() as conn:
        await conn.execute("VACUUM (ANALYZE)")
    return time.monotonic() - start


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
