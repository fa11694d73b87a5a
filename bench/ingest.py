"""Ingest benchmark: a synthetic county submitted over NATS by several institutions at once,
end to end (published → in the ledger → visible in the patient-record projection), beside
this machine's raw figures for the same events, measured in the same run.

    .venv/bin/python bench/ingest.py [--events 1050000] [--institutions 4] [--gateways 2]
                                     [--per-submission 100] [--rate 5000] [--rate-seconds 20]

The exchange runs as it does in production: `hie up` (projection, read API) with
``--gateways`` gateway processes beside it (HIE_GATEWAY_PROCESSES; 0 runs the gateway inside
`hie up`), on the embedded PostgreSQL and NATS (or HIE_DATABASE_URL / HIE_NATS_URL). Each
institution publishes from its own process. Envelopes are built and signed before the clock
starts. Phase 1 sends everything as fast as JetStream takes it; phase 2, once PostgreSQL's
autovacuum of the tables phase 1 filled is over (the wait is printed), offers a fixed rate
and measures, per submission, the time from publish to receipt and to visible in the
projection. Every process's RSS is sampled throughout. Raw figures: the ledger's library
appending the same events one aggregate per event in batches of 100, asyncpg COPY of the
same rows, JetStream publish and fetch+ack of the same envelopes.

The last line is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; the project root is wanted.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets as pysecrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import nats  # noqa: E402
import psutil  # noqa: E402

from adapters.envelope import (  # noqa: E402
    build_envelope,
    encode,
    new_private_key,
    private_key_pem,
    public_key_b64,
)
from domain.resident_id import make_resident_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HIE = str(Path(sys.executable).with_name("hie"))
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
LOINC = [("8480-6", "收缩压", "mmHg", "mm[Hg]", 120), ("8462-4", "舒张压", "mmHg", "mm[Hg]", 80),
         ("2345-7", "葡萄糖", "mmol/L", "mmol/L", 6), ("718-7", "血红蛋白", "g/L", "g/L", 130)]
ICD = [("I10", "原发性高血压"), ("E11.9", "2型糖尿病"), ("J06.9", "急性上呼吸道感染")]


# Synthetic county --------------------------------------------------------------------------


def resident_items(inst: str, n: int, count: int) -> list[dict[str, Any]]:
    """``count`` items for resident n at one institution: registration, visits, diagnoses,
    results. Values are synthetic; the resident ID is a valid, made-up GB 11643 number."""
    rid = make_resident_id("341122", date(1950, 1, 1) + timedelta(days=n % 25000), n % 1000)
    ref = {"resident_id": rid, "mrn": f"{inst}-{n}"}
    items: list[dict[str, Any]] = [{"source_id": f"{inst}-pat-{n}", "kind": "patient", "payload": {
        "patient": ref, "name": "张" + "伟芳秀英敏静丽强磊军"[n % 10],
        "gender": "female" if n % 2 else "male"}}]
    k = 0
    while len(items) < count:
        at = T0 + timedelta(days=k * 30, minutes=n % 600)
        if k % 10 == 0:
            items.append({"source_id": f"{inst}-enc-{n}-{k}", "kind": "encounter", "payload": {
                "patient": ref, "encounter_class": "outpatient", "status": "finished",
                "start": at.isoformat(), "end": (at + timedelta(minutes=15)).isoformat(),
                "department": "全科"}})
        elif k % 10 == 1:
            code, display = ICD[(n + k) % len(ICD)]
            items.append({"source_id": f"{inst}-dx-{n}-{k}", "kind": "condition", "payload": {
                "patient": ref, "code": {"system": "http://hl7.org/fhir/sid/icd-10",
                                         "version": "国家临床版2.0", "code": code,
                                         "display": display}}})
        else:
            code, display, unit, ucum, base = LOINC[(n + k) % len(LOINC)]
            items.append({"source_id": f"{inst}-obs-{n}-{k}", "kind": "observation", "payload": {
                "patient": ref, "code": {"system": "http://loinc.org", "code": code,
                                         "display": display},
                "status": "final", "category": "laboratory", "effective": at.isoformat(),
                "value_quantity": {"value": str(base + (n * 7 + k) % 40), "unit": unit,
                                   "code": ucum}}})
        k += 1
    return items


def write_envelopes(path: Path, inst: str, key: Any, residents: range, per_resident: int,
                    per_submission: int) -> tuple[int, int]:
    """Signed envelopes, length-prefixed, into one file; returns (submissions, events)."""
    subs = events = 0
    sent_at = datetime.now(UTC)
    with path.open("wb") as out:
        pending: list[dict[str, Any]] = []
        for n in residents:
            pending += resident_items(inst, n, per_resident)
            while len(pending) >= per_submission:
                chunk, pending = pending[:per_submission], pending[per_submission:]
                data = encode(build_envelope(institution=inst, items=chunk, key=key,
                                             sent_at=sent_at))
                out.write(struct.pack(">I", len(data)) + data)
                subs, events = subs + 1, events + len(chunk)
        if pending:
            data = encode(build_envelope(institution=inst, items=pending, key=key, sent_at=sent_at))
            out.write(struct.pack(">I", len(data)) + data)
            subs, events = subs + 1, events + len(pending)
    return subs, events


def submission_id(data: bytes) -> str:
    """The id an encoded envelope opens with (no parse of the whole: the load generator
    should cost the machine as little as it can)."""
    found = re.match(rb'\{"submission_id":"([^"]+)"', data)
    assert found, "an envelope encoded by adapters.envelope.encode opens with its id"
    return found.group(1).decode()


def read_envelopes(path: Path) -> list[bytes]:
    blob = path.read_bytes()
    out, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack_from(">I", blob, i)
        out.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return out


# Publishing --------------------------------------------------------------------------------


async def publish_all(nats_url: str, subject: str, envelopes: list[bytes],
                      window: int = 64) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sem = asyncio.Semaphore(window)

    async def one(data: bytes) -> None:
        sid = submission_id(data)
        try:
            for _ in range(20):  # bounded: a lost ack is retried with the same id (de-duplicated)
                try:
                    await js.publish(subject, data, headers={"Nats-Msg-Id": sid}, timeout=30)
                    return
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
            raise RuntimeError("publish kept timing out")
        finally:
            sem.release()

    tasks = []
    for data in envelopes:
        await sem.acquire()
        tasks.append(asyncio.create_task(one(data)))
    await asyncio.gather(*tasks)
    await nc.drain()


def publisher_main(args: argparse.Namespace) -> None:
    """A child process: one institution publishing its file as fast as JetStream takes it."""
    envelopes = read_envelopes(Path(args.publisher))
    asyncio.run(publish_all(args.nats_url, args.subject, envelopes))


# Raw figures of this machine ---------------------------------------------------------------


def raw_ledger_limit(database_url: str, items: list[dict[str, Any]]) -> float:
    """The ledger's library on the same PostgreSQL, one aggregate per event, batches of 100,
    with the exchange's cipher and compressor: events/s."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate

    from exchange.ingest.ledger import ledger_env

    class Fact(Aggregate):
        def __init__(self, item: dict[str, Any]) -> None:
            self.item = item

    class RawLedger(Application[Any]):
        name = "rawledger"

    env = ledger_env(database_url, base64_key())
    env["APPLICATION_RECORDER_TOPIC"] = "eventsourcing.postgres:PostgresApplicationRecorder"
    app = RawLedger(env=env)
    try:
        t = time.perf_counter()
        for i in range(0, len(items), 100):
            app.save(*[Fact(item) for item in items[i:i + 100]])
        return len(items) / (time.perf_counter() - t)
    finally:
        app.close()


def base64_key() -> str:
    import base64
    return base64.b64encode(pysecrets.token_bytes(32)).decode()


async def raw_copy(database_url: str, items: list[dict[str, Any]]) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE raw_copy (id uuid, source_id text, item text)")
        rows = [(uuid.uuid4(), i["source_id"], json.dumps(i, ensure_ascii=False)) for i in items]
        t = time.perf_counter()
        for i in range(0, len(rows), 1000):
            async with conn.transaction():
                await conn.copy_records_to_table("raw_copy", records=rows[i:i + 1000])
        return len(rows) / (time.perf_counter() - t)
    finally:
        await conn.execute("DROP TABLE IF EXISTS raw_copy")
        await conn.close()


async def raw_jetstream(nats_url: str, envelopes: list[bytes],
                        events_each: float) -> dict[str, float]:
    """Publish the envelopes to a scratch stream and fetch+ack them back: events/s each way."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"RAW_{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(name=name, subjects=[f"raw.{name}"])
    try:
        t = time.perf_counter()
        acks = [await js.publish_async(f"raw.{name}", data, wait_stall=5) for data in envelopes]
        await asyncio.wait_for(asyncio.gather(*acks), 120)
        published = len(envelopes) / (time.perf_counter() - t)
        sub = await js.pull_subscribe(f"raw.{name}", durable="raw")
        t, got = time.perf_counter(), 0
        while got < len(envelopes):
            for msg in await sub.fetch(200, timeout=5):
                await msg.ack()
                got += 1
        fetched = got / (time.perf_counter() - t)
        return {"publish_events_per_s": published * events_each,
                "fetch_ack_events_per_s": fetched * events_each}
    finally:
        await js.delete_stream(name)
        await nc.close()


# The exchange under load -------------------------------------------------------------------


class Rss:
    """Peak RSS per process of the exchange (and, for the record, the servers)."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.peak: dict[str, float] = dict.fromkeys(procs, 0.0)

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass


def cpu_seconds(proc: psutil.Process, children: bool) -> float:
    """User + system CPU of a process, with its children's if asked (PostgreSQL's backends;
    not `hie up`'s gateways, which are counted on their own)."""
    total = 0.0
    for p in [proc, *(proc.children(recursive=True) if children else [])]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


class Receipts:
    """Counts the receipts of phase 1 (a core NATS subscription: cheap, and it asks the
    database nothing while the exchange works)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.other: list[dict[str, Any]] = []
        self.all_in = asyncio.Event()
        self.expected = 0

    async def on_msg(self, msg: Any) -> None:
        receipt = json.loads(msg.data)
        if receipt.get("status") == "accepted" and not receipt.get("repeat"):
            self.accepted += 1
        elif receipt.get("status") != "accepted":
            self.other.append(receipt)
        if self.accepted >= self.expected:
            self.all_in.set()


async def wait_visible(pool: asyncpg.Pool, receipts: Receipts, timeout: float) -> float:
    """Wait until every submission is accepted into the ledger and the projection has
    applied the ledger up to its last position."""
    try:
        await asyncio.wait_for(receipts.all_in.wait(), timeout)
    except TimeoutError:
        raise RuntimeError(f"only {receipts.accepted} submissions were accepted in time; "
                           f"other receipts: {receipts.other[:3]}") from None
    end = await pool.fetchval("SELECT max(notification_id) FROM ledger_events")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT position FROM projection_position "
                               "WHERE name = 'patient_record'") >= end:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise RuntimeError("the projection did not catch up in time")


async def fixed_rate(nats_url: str, consortium: str, pool: asyncpg.Pool,
                     envelopes: dict[str, list[bytes]], rate: float, seconds: float,
                     per_submission: int) -> tuple[list[float], list[float]]:
    """Offer ``rate`` events/s for ``seconds``; per submission, publish → visible seconds,
    and publish → receipt (the gateway's share of it)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    published: dict[str, float] = {}
    positions: dict[str, int] = {}
    receipted: dict[str, float] = {}
    got_all = asyncio.Event()

    async def on_receipt(msg: Any) -> None:
        receipt = json.loads(msg.data)
        if receipt.get("status") == "accepted" and receipt["submission_id"] in published:
            receipted[receipt["submission_id"]] = time.monotonic()
            positions[receipt["submission_id"]] = receipt["positions"][0]
            if len(positions) == total:
                got_all.set()

    await nc.subscribe(f"hie.{consortium}.receipt.*", cb=on_receipt)
    order = [(inst, data) for group in zip(*envelopes.values(), strict=False)
             for inst, data in zip(envelopes, group, strict=True)]
    total = min(len(order), int(rate * seconds / per_submission))
    order = order[:total]
    visible: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            at = await pool.fetchval("SELECT position FROM projection_position "
                                     "WHERE name = 'patient_record'")
            now = time.monotonic()
            for sid, pos in list(positions.items()):
                if sid not in visible and pos <= at:
                    visible[sid] = now
            if len(visible) == total:
                done.set()
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    interval = per_submission / rate
    start = time.monotonic()
    for i, (inst, data) in enumerate(order):
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        sid = submission_id(data)
        published[sid] = time.monotonic()
        await js.publish(f"hie.{consortium}.submit.{inst}", data,
                         headers={"Nats-Msg-Id": sid}, timeout=30)
    await asyncio.wait_for(got_all.wait(), 120)
    await asyncio.wait_for(done.wait(), 120)
    watcher.cancel()
    await nc.close()
    return (sorted(visible[s] - published[s] for s in visible),
            sorted(receipted[s] - published[s] for s in receipted))


async def autovacuum_done(pool: asyncpg.Pool, timeout: float) -> float:
    """Wait until no autovacuum worker has been busy on this database for two seconds;
    return how long that took."""
    start = quiet_since = time.monotonic()
    while time.monotonic() - start < timeout:
        busy = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
            "AND datname = current_database()")
        now = time.monotonic()
        if busy:
            quiet_since = now
        elif now - quiet_since >= 2.0:
            return quiet_since - start
        await asyncio.sleep(0.25)
    return time.monotonic() - start


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from exchange.servers.embedded import EmbeddedServers
    from exchange.ingest.ledger import Ledger
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
        env = {**os.environ, "HIE_DATA_DIR": str(work / "data"), "HIE_CONSORTIUM": consortium,
               "HIE_DATABASE_URL": db_url, "HIE_NATS_URL": nats_url, "HIE_HTTP_PORT": "0"}
        settings = load_settings(env)  # generates the installation's secrets into the data dir

        # The county: institutions with their keys, residents shared out, envelopes signed.
        institutions = ["county-hospital", *[f"thc-{i}" for i in range(1, args.institutions)]]
        per_resident = 75
        residents = args.events // per_resident // len(institutions)
        keys = {inst: new_private_key() for inst in institutions}
        print(f"building {args.events:,} events: {len(institutions)} institutions × "
              f"{residents:,} residents × {per_resident} events, {args.per_submission} per "
              "submission ...", flush=True)
        files, subs, events = {}, 0, 0
        for n, inst in enumerate(institutions):
            files[inst] = work / f"{inst}.envelopes"
            (work / f"{inst}.pem").write_bytes(private_key_pem(keys[inst]))
            s, e = write_envelopes(files[inst], inst, keys[inst],
                                   range(n * residents, (n + 1) * residents), per_resident,
                                   args.per_submission)
            subs, events = subs + s, events + e
        rate_sets: dict[str, list[bytes]] = {inst: [] for inst in institutions}
        for n, inst in enumerate(institutions):  # fresh residents for the fixed-rate phase
            path = work / f"{inst}.rate"
            first = 10**6 + n * 2000
            write_envelopes(path, inst, keys[inst], range(first, first + 2000), per_resident,
                            args.per_submission)
            rate_sets[inst] = read_envelopes(path)

        ledger = await asyncio.to_thread(Ledger, db_url, settings.secrets.ledger_cipher_key,
                                         settings.secrets.pseudonym_key)
        for inst in institutions:
            await asyncio.to_thread(ledger.register_institution, inst, f"机构{inst}",
                                    "township_health_centre", public_key_b64(keys[inst]))
        await asyncio.to_thread(ledger.close)

        # Raw figures first, on the same servers (their own scratch tables and stream).
        sample_items = [i for data in read_envelopes(files[institutions[0]])[:200]
                        for i in json.loads(data)["events"]]
        sample_envs = read_envelopes(files[institutions[0]])[:500]
        print("raw figures ...", flush=True)
        ledger_limit = await asyncio.to_thread(raw_ledger_limit, db_url, sample_items)
        copy_rate = await raw_copy(db_url, sample_items)
        js_rates = await raw_jetstream(nats_url, sample_envs, args.per_submission)

        # The exchange: `hie up` and its gateway processes.
        env["HIE_GATEWAY_PROCESSES"] = str(args.gateways)
        procs.append(subprocess.Popen([HIE, "up"], env=env, cwd=work, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
        line = b""
        while b"exchange ready" not in line:
            line = procs[0].stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError("hie up did not start")
        await asyncio.sleep(2.0)
        up = psutil.Process(procs[0].pid)
        watched = {f"hie up (pid {up.pid})": up}
        watched |= {f"hie gateway (pid {c.pid})": c for c in up.children()
                    if "gateway" in " ".join(c.cmdline())}
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
        publishers = [subprocess.Popen(
            [sys.executable, __file__, "--publisher", str(files[inst]), "--nats-url", nats_url,
             "--subject", f"hie.{consortium}.submit.{inst}"]) for inst in institutions]
        end = await wait_visible(pool, receipts, timeout=3600)
        await listener.close()
        for p in publishers:
            p.wait()
        elapsed = end - start
        cpu = {n: cpu_seconds(p, n.startswith("server")) - cpu_before[n]
               for n, p in watched.items() if p.is_running()}

        # Phase 2: a fixed offered rate, lag per submission, once PostgreSQL's autovacuum of
        # the tables phase 1 just filled is over (measured here: it overlaps the first seconds
        # of phase 2 and takes the lag p99 from ~0.08 s to ~0.3 s on two cores).
        settled = await autovacuum_done(pool, timeout=300)
        print(f"phase 2: {args.rate:,} events/s offered for {args.rate_seconds} s (after "
              f"{settled:.0f} s of autovacuum) ...", flush=True)
        lags, to_receipt = await fixed_rate(nats_url, consortium, pool, rate_sets, args.rate,
                                args.rate_seconds, args.per_submission)
        stop.set()
        await sampler
        await pool.close()
        exchange_peak = max(v for k, v in rss.peak.items() if k.startswith("hie"))
        result = {
            "events": events, "submissions": subs, "institutions": len(institutions),
            "gateways": args.gateways, "elapsed_s": round(elapsed, 2),
            "events_per_s": round(events / elapsed),
            "ledger_limit_events_per_s": round(ledger_limit),
            "ratio_to_ledger_limit": round(events / elapsed / ledger_limit, 2),
            "raw_copy_rows_per_s": round(copy_rate),
            "raw_jetstream_publish_events_per_s": round(js_rates["publish_events_per_s"]),
            "raw_jetstream_fetch_ack_events_per_s": round(js_rates["fetch_ack_events_per_s"]),
            "lag_offered_events_per_s": args.rate, "autovacuum_waited_s": round(settled, 1),
            "lag_submissions": len(lags),
            "lag_p50_s": round(statistics.median(lags), 4),
            "lag_p99_s": round(quantile(lags, 0.99), 4),
            "lag_max_s": round(lags[-1], 4),
            "receipt_p50_s": round(statistics.median(to_receipt), 4),
            "receipt_p99_s": round(quantile(to_receipt, 0.99), 4),
            "peak_rss_mb": round(exchange_peak, 1),
            "peak_rss_mb_by_process": {k: round(v, 1) for k, v in rss.peak.items()},
            "cpu_s_phase1_by_process": {k: round(v, 1) for k, v in cpu.items()},
            "cores": os.cpu_count(),
        }
        return result
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


async def drop_what_the_run_made(db_url: str, nats_url: str, consortium: str) -> None:
    with contextlib.suppress(Exception):
        admin = await asyncpg.connect(db_url.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{consortium}" WITH (FORCE)')
        await admin.close()
    with contextlib.suppress(Exception):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name.startswith(f"HIE_{consortium.upper()}_"):
                await js.delete_stream(name)
        await nc.close()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_050_000)
    p.add_argument("--institutions", type=int, default=4)
    p.add_argument("--gateways", type=int, default=2, help="gateway processes beside hie up")
    p.add_argument("--per-submission", type=int, default=100)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--rate-seconds", type=float, default=20.0)
    p.add_argument("--publisher", help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--subject", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.publisher:
        publisher_main(arguments)
        sys.exit(0)
    figures = asyncio.run(main(arguments))
    print(f"end to end: {figures['events_per_s']:,} events/s "
          f"({figures['events']:,} events in {figures['elapsed_s']} s; ledger's own limit "
          f"{figures['ledger_limit_events_per_s']:,}/s, ratio {figures['ratio_to_ledger_limit']})")
    print(f"raw: COPY {figures['raw_copy_rows_per_s']:,} rows/s; JetStream publish "
          f"{figures['raw_jetstream_publish_events_per_s']:,} and fetch+ack "
          f"{figures['raw_jetstream_fetch_ack_events_per_s']:,} events/s")
    print(f"lag at {figures['lag_offered_events_per_s']:,} events/s offered: p50 "
          f"{figures['lag_p50_s']} s, p99 {figures['lag_p99_s']} s (of which publish → receipt "
          f"p50 {figures['receipt_p50_s']} s, p99 {figures['receipt_p99_s']} s)")
    print(f"peak RSS: {figures['peak_rss_mb_by_process']}")
    print(f"CPU seconds in phase 1: {figures['cpu_s_phase1_by_process']}")
    print(json.dumps(figures, ensure_ascii=False))
