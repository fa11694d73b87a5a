"""Audit-log benchmark: durable group-committed appends, proof times, and a full verify of
1,000,000 records read from PostgreSQL — beside this machine's raw hash, signature and
row-read rates, measured in the same run — under a crypto profile: intl (SHA-256 tree, Ed25519
heads) or gm (SM3 tree, SM2 heads), or both one after the other in the same run, each in a
database of its own on the same server, printed side by side.

    .venv/bin/python bench/audit.py [--profile intl|gm|both] [--records 1000000]
                                    [--append-seconds 10] [--writers 64]
                                    [--loop uvloop|asyncio] [--verify-workers 2]

Runs on uvloop, as the exchange does (``--loop asyncio``: the standard library's loop, as
this bench did before). Uses the embedded PostgreSQL (or the server of HIE_DATABASE_URL, in
which it creates and drops a database per profile). Its last line is one JSON object: the
profile's figures, or with ``--profile both`` {"intl": {...}, "gm": {...}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file's name would
# hide the `audit` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime

import asyncpg
import psutil

from audit.merkle import hasher_named
from audit.postgres import AuditStore, record_hash
from audit.verify_rows import WORKERS
from audit.writer import AuditWriter
from cryptoprofile import NAMES, Profile, by_name
from exchange.database import migrate_stored_tables
from exchange.servers.audit_heads import HeadSigner, verify_log
from exchange.servers.embedded import EmbeddedPostgres


def record(n: int) -> dict[str, object]:
    """A read decision of realistic size (~600 bytes of canonical JSON)."""
    return {
        "action": "read",
        "request_id": f"{n:032x}",
        "route": "/fhir/Patient/x/$everything",
        "person": f"doctor-{n % 97}",
        "role": "physician",
        "institution": "county-hospital",
        "token_id": f"{n % 5000:016x}",
        "patient_id": None,
        "purpose": "TREAT",
        "decision": "permit",
        "reasons": [{"code": "consent.permit", "message": "ok"}],
        "legal_basis": f"consent:{n:032x}",
        "break_glass": False,
        "obligations": [],
        "disclosed": [f"Observation/{n:032x}", f"Condition/{n:032x}"],
        "source": "127.0.0.1",
    }


def raw_rates(sample: bytes, profile: Profile) -> dict[str, float]:
    """The profile's hash (as the audit log calls it), signing and verifying, per second."""
    digest = hasher_named(profile.hash_name).digest
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        digest(sample)
    rate = n / (time.perf_counter() - t)
    key = profile.new_private_key()
    sig = key.sign(sample)
    pub = key.public_key()
    t = time.perf_counter()
    for _ in range(2000):
        pub.verify(sig, sample)
    verify = 2000 / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(2000):
        key.sign(sample)
    sign = 2000 / (time.perf_counter() - t)
    return {"raw_hash_per_s": rate, "raw_verify_per_s": verify, "raw_sign_per_s": sign}


class CpuClock:
    """CPU seconds of this process and of the PostgreSQL server (its postmaster and every
    process under it, when this machine can see them): figures that a busy machine does not
    bend the way it bends wall time."""

    def __init__(self, server_pid: int | None) -> None:
        self.me = psutil.Process()
        self.server = None
        if server_pid is not None:
            try:
                self.server = psutil.Process(server_pid).parent()
            except psutil.Error:
                pass

    def read(self) -> tuple[float, float]:
        t = self.me.cpu_times()
        mine = t.user + t.system + t.children_user + t.children_system
        theirs = 0.0
        if self.server is not None:  # with the backends that ended (the postmaster reaped)
            try:
                p = self.server.cpu_times()
                theirs += p.children_user + p.children_system
            except psutil.Error:
                pass
            for proc in [self.server, *self.server.children(recursive=True)]:
                try:
                    c = proc.cpu_times()
                    theirs += c.user + c.system
                except psutil.Error:
                    pass
        return mine, theirs


async def durable_appends(
    writer: AuditWriter, seconds: float, writers: int, clock: CpuClock
) -> tuple[float, float, float]:
    """Appends per second, and the client's and the server's CPU microseconds per append."""
    done = 0
    deadline = time.monotonic() + seconds

    async def one(w: int) -> None:
        nonlocal done
        n = w
        while time.monotonic() < deadline:
            await writer.append(record(n), datetime.now(UTC))
            done += 1
            n += writers

    mine, theirs = clock.read()
    t = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(writers)))
    rate = done / (time.perf_counter() - t)
    mine2, theirs2 = clock.read()
    return rate, (mine2 - mine) * 1e6 / done, (theirs2 - theirs) * 1e6 / done


async def fill(store: AuditStore, target: int) -> float:
    size = (await store.tree()).size
    t = time.perf_counter()
    now = datetime.now(UTC)
    while size < target:
        batch = min(5000, target - size)
        await store.append_many([(record(size + i), now) for i in range(batch)])
        size += batch
    return time.perf_counter() - t


async def proof_times(store: AuditStore, size: int, count: int = 200) -> tuple[float, float]:
    inclusion, consistency = [], []
    for i in range(count):
        t = time.perf_counter()
        await store.inclusion((i * 7919) % size, size)
        inclusion.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.consistency(max(1, (i * 104729) % size), size)
        consistency.append(time.perf_counter() - t)
    return statistics.median(inclusion) * 1000, statistics.median(consistency) * 1000


async def raw_row_read(pool: asyncpg.Pool) -> float:
    async with pool.acquire() as conn, conn.transaction():
        t = time.perf_counter()
        n = 0
        async for _ in conn.cursor(
            "SELECT seq, record_text, leaf_hash, chain_hash FROM audit_log ORDER BY seq",
            prefetch=20_000,
        ):
            n += 1
    return n / (time.perf_counter() - t)


async def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    server = os.environ.get("HIE_DATABASE_URL")
    pg = None
    if not server:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="hie-bench-")))
        server = await asyncio.to_thread(pg.start)
    names = list(NAMES) if args.profile == "both" else [args.profile]
    try:
        results = {}
        for name in names:
            # A database of its own for each profile: an audit log is made with one hash.
            database = f"hie_bench_audit_{name}"
            admin = await asyncpg.connect(server)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{database}"')
            finally:
                await admin.close()
            try:
                results[name] = await run_profile(
                    args, server.rsplit("/", 1)[0] + "/" + database, by_name(name)
                )
            finally:
                admin = await asyncpg.connect(server)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                finally:
                    await admin.close()
        return results
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)
            shutil.rmtree(pg.root, ignore_errors=True)  # a million records: gigabytes


async def run_profile(args: argparse.Namespace, url: str, profile: Profile) -> dict[str, float]:
    print(
        f"--- {profile.name}: {profile.hash_name} tree, {profile.signature} heads ---", flush=True
    )
    pool = await asyncpg.create_pool(url, min_size=2, max_size=8)
    await migrate_stored_tables(pool)
    await record_hash(pool, profile.hash_name)  # as the exchange does as it starts
    store = AuditStore(pool, profile)
    writer = AuditWriter(store)
    out: dict[str, float] = raw_rates(json.dumps(record(1)).encode(), profile)
    print(
        f"raw: {profile.hash_name} {out['raw_hash_per_s']:,.0f}/s, {profile.signature} "
        f"verify {out['raw_verify_per_s']:,.0f}/s, sign {out['raw_sign_per_s']:,.0f}/s",
        flush=True,
    )
    clock = CpuClock(await pool.fetchval("SELECT pg_backend_pid()"))
    (
        out["append_per_s"],
        out["append_client_cpu_us"],
        out["append_server_cpu_us"],
    ) = await durable_appends(writer, args.append_seconds, args.writers, clock)
    await writer.close()
    print(
        f"durable group-committed appends, {args.writers} concurrent writers: "
        f"{out['append_per_s']:,.0f}/s (CPU per append: {out['append_client_cpu_us']:.1f} "
        f"us here, {out['append_server_cpu_us']:.1f} us in PostgreSQL)",
        flush=True,
    )
    out["fill_s"] = await fill(store, args.records)
    signer = HeadSigner("bench", os.urandom(32), profile)
    await store.record_head(signer.note, datetime.now(UTC))
    print(
        f"filled to {args.records:,} records in {out['fill_s']:.1f} s (bulk batches of 5,000)",
        flush=True,
    )
    # The append's cost must not grow with the log: the same appends again at full size.
    writer = AuditWriter(store)
    (
        out["append_full_per_s"],
        out["append_full_client_cpu_us"],
        out["append_full_server_cpu_us"],
    ) = await durable_appends(writer, args.append_seconds, args.writers, clock)
    await writer.close()
    print(
        f"durable group-committed appends at {args.records:,} records: "
        f"{out['append_full_per_s']:,.0f}/s (CPU per append: "
        f"{out['append_full_client_cpu_us']:.1f} us here, "
        f"{out['append_full_server_cpu_us']:.1f} us in PostgreSQL)",
        flush=True,
    )
    out["inclusion_proof_ms"], out["consistency_proof_ms"] = await proof_times(store, args.records)
    out["proof_ms"] = max(out["inclusion_proof_ms"], out["consistency_proof_ms"])
    print(
        f"proofs at size {args.records:,}: inclusion {out['inclusion_proof_ms']:.2f} ms, "
        f"consistency {out['consistency_proof_ms']:.2f} ms (median)",
        flush=True,
    )
    out["raw_row_read_per_s"] = await raw_row_read(pool)
    print(f"raw row read: {out['raw_row_read_per_s']:,.0f} rows/s", flush=True)
    mine, theirs = clock.read()
    t = time.perf_counter()
    report = await verify_log(pool, signer, url, workers=args.verify_workers)
    out["verify_1m_s"] = (time.perf_counter() - t) * 1_000_000 / max(report.records, 1)
    mine2, theirs2 = clock.read()
    out["verify_1m_client_cpu_s"] = (mine2 - mine) * 1_000_000 / max(report.records, 1)
    out["verify_1m_server_cpu_s"] = (theirs2 - theirs) * 1_000_000 / max(report.records, 1)
    assert report.ok, report.findings[:1]
    print(
        f"verify: {report.records:,} records and {report.heads_checked} head in "
        f"{time.perf_counter() - t:.1f} s (scaled to 1M: {out['verify_1m_s']:.1f} s; CPU "
        f"scaled to 1M: {out['verify_1m_client_cpu_s']:.1f} s here and in worker "
        f"processes, {out['verify_1m_server_cpu_s']:.1f} s in PostgreSQL)",
        flush=True,
    )
    await pool.close()
    return out


# The figures printed side by side with --profile both: (key, label, format).
COMPARED = (
    ("verify_1m_s", "verify, scaled to 1M records (s)", "{:.1f}"),
    ("verify_1m_client_cpu_s", "  its CPU here and in workers (s)", "{:.1f}"),
    ("inclusion_proof_ms", "inclusion proof, median (ms)", "{:.2f}"),
    ("consistency_proof_ms", "consistency proof, median (ms)", "{:.2f}"),
    ("append_per_s", "durable appends/s, empty log", "{:,.0f}"),
    ("append_full_per_s", "durable appends/s, full log", "{:,.0f}"),
    ("append_full_client_cpu_us", "  CPU per append here (us)", "{:.1f}"),
    ("raw_hash_per_s", "raw hash of a record /s", "{:,.0f}"),
    ("raw_sign_per_s", "raw signatures/s", "{:,.0f}"),
    ("raw_verify_per_s", "raw signature checks/s", "{:,.0f}"),
)


def side_by_side(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    lines = [f"{'':36}" + "".join(f"{n:>14}" for n in names) + f"{'gm/intl':>10}"]
    for key, label, form in COMPARED:
        cells = [form.format(results[n][key]) for n in names]
        ratio = results["gm"][key] / results["intl"][key] if results["intl"][key] else 0.0
        lines.append(f"{label:36}" + "".join(f"{c:>14}" for c in cells) + f"{ratio:>9.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=[*NAMES, "both"], default="intl")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--append-seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--verify-workers", type=int, default=WORKERS)
    options = parser.parse_args()
    if options.loop == "uvloop":
        import uvloop

        results = uvloop.run(main(options))
    else:
        results = asyncio.run(main(options))
    rounded = {n: {k: round(v, 3) for k, v in r.items()} for n, r in results.items()}
    if options.profile == "both":
        print(f"--- side by side, {options.records:,} records ---")
        print(side_by_side(results))
        print(json.dumps(rounded))
    else:
        print(json.dumps({"profile": options.profile, **rounded[options.profile]}))
