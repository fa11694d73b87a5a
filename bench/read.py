"""Read benchmark: `GET /fhir/Patient/<id>/$everything` for patients with ~200 entries from
four institutions, consent decision and durable audit append included, beside this machine's
raw figures for the same kind of work, measured in the same run.

    .venv/bin/python bench/read.py [--patients 200] [--entries 200] [--rate 50] [--seconds 20]
                                   [--connections 8,16,32]
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
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
import nats  # noqa: E402
import psutil  # noqa: E402

from adapters.envelope import build_envelope, new_private_key, public_key_b64  # noqa: E402
from bench.ingest import drop_what_the_run_made  # noqa: E402
from adapters.nats import SubmitClient  # noqa: E402
from domain.resident_id import make_resident_id  # noqa: E402

HIE = str(Path(sys.executable).with_name("hie"))
CLIENT = str(Path(__file__).resolve().with_name("read_client.py"))
INTERRUPTED: list[bool] = []  # set by Ctrl-C or SIGTERM: whatever fails next is not news
TARGETS = {"p50_ms": 6.0, "p99_ms": 15.0, "peak_rps": 600}
INSTITUTIONS = [  # the reading physician works at the first
    ("county-hospital", "青溪县人民医院", "county_hospital"),
    ("dongcheng-thc", "东城镇卫生院", "township_health_centre"),
    ("xishan-thc", "西山乡卫生院", "township_health_centre"),
    ("taoyuan-vc", "桃源村卫生室", "village_clinic"),
]
READER = INSTITUTIONS[0][0]
CONSENTING = INSTITUTIONS[1][0]  # where each resident signed the consent

# Synthetic county ---------------------------------------------------------------------------

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = ["建国", "秀英", "桂兰", "志强", "丽娟", "海燕", "国华", "玉梅", "德明", "春花",
         "文斌", "淑珍", "永红", "小军", "凤英"]
VITALS = [("8480-6", "收缩压", "mmHg", "mm[Hg]", 120), ("8462-4", "舒张压", "mmHg", "mm[Hg]", 78),
          ("8867-4", "心率", "次/分", "/min", 72), ("29463-7", "体重", "kg", "kg", 62)]
LABS = [("2345-7", "葡萄糖", "mmol/L", "mmol/L", 5), ("718-7", "血红蛋白", "g/L", "g/L", 128),
        ("2160-0", "肌酐", "μmol/L", "umol/L", 70), ("4548-4", "糖化血红蛋白", "%", "%", 6)]
DIAGNOSES = [("I10", "原发性高血压"), ("E11.9", "2型糖尿病"), ("J06.9", "急性上呼吸道感染"),
             ("K29.7", "胃炎"), ("M54.5", "腰痛")]
DRUGS = [("C09AA02", "依那普利片", "10 mg 每日一次"), ("A10BA02", "二甲双胍片", "0.5 g 每日三次"),
         ("C08CA01", "氨氯地平片", "5 mg 每日一次"), ("J01CA04", "阿莫西林胶囊", "0.5 g 每日三次")]
ATC, LOINC = "http://www.whocc.no/atc", "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
NOTICE = hashlib.sha256("青溪县医共体健康信息共享告知书 v1".encode()).hexdigest()
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def resident_id(n: int) -> str:
    return make_resident_id("341122", date(1940, 1, 1) + timedelta(days=n * 97 % 25000), n % 1000)


def entry_item(inst: str, n: int, k: int, ref: dict[str, str]) -> dict[str, Any]:
    """The k-th clinical entry an institution holds for resident n (synthetic values)."""
    at = T0 + timedelta(days=k * 9, minutes=(n * 37) % 600)
    sid = f"{inst}-{n}-{k}"
    step = k % 10
    if step == 0:
        return {"source_id": f"enc-{sid}", "kind": "encounter", "payload": {
            "patient": ref, "encounter_class": "outpatient", "status": "finished",
            "start": at.isoformat(), "end": (at + timedelta(minutes=15)).isoformat(),
            "department": "全科门诊"}}
    if step == 1:
        code, display = DIAGNOSES[(n + k) % len(DIAGNOSES)]
        return {"source_id": f"dx-{sid}", "kind": "condition", "payload": {
            "patient": ref, "code": {"system": ICD10, "version": "国家临床版2.0", "code": code,
                                     "display": display}}}
    if step in (4, 6):
        code, display, dosage = DRUGS[(n + k) % len(DRUGS)]
        if step == 4:
            return {"source_id": f"rx-{sid}", "kind": "medication_request", "payload": {
                "patient": ref, "medication": {"system": ATC, "code": code, "display": display},
                "status": "completed", "authored": at.isoformat(), "dosage_text": dosage,
                "duration_days": 14}}
        return {"source_id": f"disp-{sid}", "kind": "medication_dispense", "payload": {
            "patient": ref, "medication": {"system": ATC, "code": code, "display": display},
            "status": "completed", "handed_over": at.isoformat(), "days_supply": 14,
            "quantity": {"value": "28", "unit": "片"}}}
    if step == 7:
        return {"source_id": f"proc-{sid}", "kind": "procedure", "payload": {
            "patient": ref, "code": {"system": "http://hl7.org/fhir/sid/icd-9-cm",
                                     "code": "89.52", "display": "心电图"},
            "status": "completed", "performed": at.isoformat()}}
    if step == 8 and k % 20 == 8:
        return {"source_id": f"imm-{sid}", "kind": "immunization", "payload": {
            "patient": ref, "vaccine": {"system": "http://hl7.org/fhir/sid/cvx", "code": "141",
                                        "display": "流感疫苗"},
            "status": "completed", "occurrence": at.isoformat(), "dose_number": 1}}
    if step == 8 and k == 8:
        return {"source_id": f"alg-{sid}", "kind": "allergy", "payload": {
            "patient": ref, "substance": {"system": ATC, "code": "J01CE01",
                                          "display": "青霉素"},
            "category": "medication", "criticality": "high"}}
    code, display, unit, ucum, base = (VITALS if step in (2, 3) else LABS)[(n + k) % 4]
    return {"source_id": f"obs-{sid}", "kind": "observation", "payload": {
        "patient": ref, "code": {"system": LOINC, "code": code, "display": display},
        "status": "final", "category": "vital-signs" if step in (2, 3) else "laboratory",
        "effective": at.isoformat(),
        "value_quantity": {"value": str(base + (n * 7 + k) % 9), "unit": unit, "code": ucum}}}


def county_items(patients: int, entries: int, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every institution's items: per resident a registration (with its own record number)
    and its share of the ``entries``; the consenting institution adds the separate consent.
    Every institution's first entry for a resident is a visit (a care relationship)."""
    out: dict[str, list[dict[str, Any]]] = {code: [] for code, _, _ in INSTITUTIONS}
    for n in range(patients):
        rid = resident_id(n)
        name = SURNAMES[n % len(SURNAMES)] + GIVEN[n * 7 % len(GIVEN)]
        for i, (inst, _, _) in enumerate(INSTITUTIONS):
            ref = {"resident_id": rid, "mrn": f"{inst.split('-')[0].upper()}{n:06d}"}
            items = out[inst]
            items.append({"source_id": f"pat-{inst}-{n}", "kind": "patient", "payload": {
                "patient": ref, "name": name, "gender": "female" if n % 2 else "male",
                "birth_date": rid[6:10] + "-" + rid[10:12] + "-" + rid[12:14]}})
            share = entries // len(INSTITUTIONS) + (i < entries % len(INSTITUTIONS))
            items += [entry_item(inst, n, k, ref) for k in range(share)]
            if inst == CONSENTING:
                items.append({"source_id": f"consent-{n}", "kind": "consent", "payload": {
                    "patient": {"resident_id": rid}, "consent_type": "separate",
                    "scope": ["*"], "purposes": ["TREAT"],
                    "valid_from": (now - timedelta(days=30)).isoformat(),
                    "valid_to": (now + timedelta(days=5 * 365)).isoformat(),
                    "notice_sha256": NOTICE, "signed_by": "patient"}})
    return out


async def seed(nats_url: str, consortium: str, keys: dict[str, Any],
               items: dict[str, list[dict[str, Any]]], per_submission: int) -> int:
    """Submit every institution's items through NATS (the four at once); return how many
    submissions were accepted. Raises if any was rejected."""
    nc = await nats.connect(nats_url)
    try:
        async def one(inst: str) -> list[dict[str, Any]]:
            sent_at = datetime.now(UTC)
            mine = items[inst]
            envelopes = [build_envelope(institution=inst, items=mine[i:i + per_submission],
                                        key=keys[inst], sent_at=sent_at)
                         for i in range(0, len(mine), per_submission)]
            receipts = await SubmitClient(nc, consortium, inst).submit(envelopes, wait=300)
            return list(receipts.values())

        receipts = [r for group in await asyncio.gather(*(one(i) for i, _, _ in INSTITUTIONS))
                    for r in group]
    finally:
        await nc.close()
    refused = [r for r in receipts if r.get("status") != "accepted"]
    if refused:
        problems = refused[0].get("problems", [])[:3]
        raise RuntimeError(f"{len(refused)} seed submission(s) were not accepted, e.g. "
                           f"{json.dumps(problems, ensure_ascii=False)}")
    return len(receipts)


async def projection_caught_up(db_url: str, timeout: float) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        end = await conn.fetchval("SELECT max(notification_id) FROM ledger_events")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = await conn.fetchval("SELECT position FROM projection_position "
                                     "WHERE name = 'patient_record'")
            if at is not None and at >= end:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the projection did not catch up with the ledger in time")
    finally:
        await conn.close()


async def settle(db_url: str) -> None:
    """VACUUM ANALYZE what the seeding wrote: planner statistics and visibility maps as
    autovacuum would leave them (it would otherwise run during the measurement)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


# Raw figures of this machine ----------------------------------------------------------------


async def raw_postgres(db_url: str, seconds: float) -> dict[str, float]:
    """asyncpg round trips and durable single-row commits on the exchange's own database."""

    async def loop(call: Any) -> tuple[int, float, list[float]]:
        n, lat, start = 0, [], time.perf_counter()
        while (t := time.perf_counter()) - start < seconds:
            await call()
            lat.append(time.perf_counter() - t)
            n += 1
        return n, time.perf_counter() - start, lat

    conns = [await asyncpg.connect(db_url) for _ in range(8)]
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10)
    try:
        one = conns[0]
        n, took, _ = await loop(lambda: one.fetchval("SELECT 1"))
        select1 = n / took
        done = await asyncio.gather(*(loop(lambda c=c: c.fetchval("SELECT 1")) for c in conns))
        select1_8 = sum(d[0] for d in done) / max(d[1] for d in done)
        n, took, _ = await loop(lambda: pool.fetchval("SELECT 1"))
        pooled = n / took
        await one.execute("CREATE TABLE raw_commit (id bigserial PRIMARY KEY, "
                          "at timestamptz NOT NULL, note text NOT NULL)")
        n, took, lat = await loop(lambda: one.execute(
            "INSERT INTO raw_commit (at, note) VALUES (now(), $1)", "审计"))
        lat.sort()
        return {"raw_pg_select1_per_s": round(select1),
                "raw_pg_select1_per_s_8_connections": round(select1_8),
                "raw_pg_pool_select1_per_s": round(pooled),
                "raw_pg_commit_per_s": round(n / took),
                "raw_pg_commit_p50_ms": round(lat[len(lat) // 2] * 1000, 3)}
    finally:
        with contextlib.suppress(Exception):
            await conns[0].execute("DROP TABLE IF EXISTS raw_commit")
        await pool.close()
        for c in conns:
            await c.close()


def hello_server_main() -> None:
    """A child process: a bare Starlette app on the exchange's uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def hello(request: Request) -> Response:
        return Response(b"hello", media_type="text/plain")

    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then (with
    # protocol 0, Nagle holds the body back behind the headers for a delayed ACK, ~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(Starlette(routes=[Route("/hello", hello)]), log_level="warning",
                            lifespan="off", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


# Processes and their CPU --------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of a process and its live children."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    return times.user + times.system + sum(getattr(times, f, 0.0) for f in (
        "nice", "irq", "softirq"))


def peak_rss_mb(proc: psutil.Process, sampled: float) -> float:
    """The kernel's high-water mark of the process's RSS where it keeps one, else sampled."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return max(sampled, int(line.split()[1]) / 1024)
    return sampled


class Processes:
    """Everything this run starts, so that every exit path stops all of it."""

    def __init__(self) -> None:
        self.popen: list[subprocess.Popen[bytes]] = []
        self.aio: list[asyncio.subprocess.Process] = []

    def stop_all(self) -> None:
        for proc in self.aio:
            with contextlib.suppress(ProcessLookupError, OSError):
                if proc.returncode is None:
                    proc.terminate()
        for p in self.popen:
            with contextlib.suppress(ProcessLookupError, OSError):
                if p.poll() is None:
                    p.terminate()
        deadline = time.monotonic() + 30
        for p in self.popen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()
        for proc in self.aio:  # the load generator: it exits at SIGTERM; this is a backstop
            with contextlib.suppress(ProcessLookupError, OSError):
                if proc.returncode is None:
                    proc.kill()


async def start_hie_up(env: dict[str, str], log: Path, procs: Processes,
                       timeout: float = 180) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([HIE, "up"], env=env, cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT)
    procs.popen.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"exchange ready: (http://\S+?)/fhir/metadata",
                          log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RuntimeError(f"hie up did not become ready; its output ends:\n{tail}")


async def drive(config: dict[str, Any], watched: dict[str, psutil.Process],
                procs: Processes, rss: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Run the load generator's phases; add each phase's CPU seconds per watched process."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, CLIENT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    procs.aio.append(client)
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(json.dumps(config).encode() + b"\n")
    results: dict[str, dict[str, Any]] = {}
    for phase in config["phases"]:
        ready = await asyncio.wait_for(client.stdout.readline(), 60)
        if json.loads(ready or b"{}").get("ready") != phase["name"]:
            raise RuntimeError("the load generator stopped before a phase")
        before = {name: cpu_seconds(p) for name, p in watched.items()}
        machine, began = busy_seconds(), time.monotonic()
        client.stdin.write(b"go\n")
        await client.stdin.drain()
        line = b""
        while not line:  # sample the servers' memory while the phase runs
            try:
                line = await asyncio.wait_for(client.stdout.readline(), 0.5)
                if not line:
                    raise RuntimeError("the load generator exited in the middle of a phase")
            except TimeoutError:
                pass
            for name, p in watched.items():
                with contextlib.suppress(psutil.Error):
                    rss[name] = max(rss.get(name, 0.0), p.memory_info().rss / 2**20)
        result = json.loads(line)
        result["server_cpu_s"] = {name: round(cpu_seconds(p) - before[name], 3)
                                  for name, p in watched.items()}
        # What the rest of the machine took meanwhile: other processes, interrupts (other
        # work on a shared machine skews every figure here; this says by how much).
        result["other_cpu_s"] = round(max(0.0, busy_seconds() - machine - result["cpu_s"]
                                          - sum(result["server_cpu_s"].values())), 2)
        result["other_share"] = round(result["other_cpu_s"] / (
            (time.monotonic() - began) * (os.cpu_count() or 1)), 3)
        results[phase["name"]] = result
        print(f"  {phase['name']}: {result['requests']} requests, {result['rps']}/s, p50 "
              f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms, {result['errors']} error(s)"
              + (f" {result['error_kinds']}" if result["errors"] else "")
              + f"; the rest of the machine used {result['other_cpu_s']} CPU s", flush=True)
    client.stdin.close()
    await asyncio.wait_for(client.wait(), 30)
    return results


def per_request_ms(cpu: float, result: dict[str, Any]) -> float | None:
    answered = result["answered"]
    return round(cpu / answered * 1000, 3) if answered else None


# The run ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from exchange.servers.embedded import EmbeddedServers
    from exchange.ingest.ledger import Ledger
    from exchange.settings import load_settings
    from exchange.auth.tokens import TokenIssuer

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
        env = {**os.environ, "HIE_DATA_DIR": str(work / "data"), "HIE_CONSORTIUM": consortium,
               "HIE_DATABASE_URL": db_url, "HIE_NATS_URL": nats_url, "HIE_HTTP_PORT": "0",
               "HIE_GATEWAY_PROCESSES": "0"}
        settings = load_settings(env)  # generates the installation's secrets into the data dir

        # The consortium: four institutions with their keys, registered in the ledger.
        keys = {code: new_private_key() for code, _, _ in INSTITUTIONS}
        ledger = await asyncio.to_thread(Ledger, db_url, settings.secrets.ledger_cipher_key,
                                         settings.secrets.pseudonym_key)
        try:
            for code, name, level in INSTITUTIONS:
                await asyncio.to_thread(ledger.register_institution, code, name, level,
                                        public_key_b64(keys[code]))
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
        print(f"seeding {args.patients} patients × {args.entries} entries over "
              f"{len(INSTITUTIONS)} institutions ({total_items:,} items) through NATS ...",
              flush=True)
        started = time.monotonic()
        submissions = await seed(nats_url, consortium, keys, items, args.per_submission)
        await projection_caught_up(db_url, timeout=600)
        seeded_s = time.monotonic() - started
        await settle(db_url)

        # The reading physician, and what each patient's answer must hold.
        token, _ = TokenIssuer(settings.secrets.token_key).issue(
            person="bench-doctor-chen", institution=READER, role="physician",
            now=datetime.now(UTC), ttl=timedelta(hours=8))
        host, port = http_url.removeprefix("http://").rsplit(":", 1)
        expected = 1 + args.entries  # the Patient and every entry
        seconds = args.seconds
        flat_seconds = args.flat_seconds or max(1.0, seconds / 2)
        phases: list[dict[str, Any]] = [
            {"name": "verify", "kind": "verify"},
            {"name": "rate", "kind": "rate", "rate": args.rate, "seconds": seconds,
             "connections": args.rate_connections},
            *({"name": f"flat-{c}", "kind": "flat", "connections": c,
               "seconds": flat_seconds, "warmup": min(1.0, flat_seconds / 3)}
              for c in args.connections)]
        config = {"host": host, "port": int(port), "seed": 7, "check_every": args.check_every,
                  "headers": {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "TREAT",
                              "Accept": "application/fhir+json"},
                  "requests": [[f"/fhir/Patient/{pid}/$everything", expected]
                               for pid in patient_ids],
                  "phases": phases}
        print(f"load: verify every patient, then {args.rate}/s for {seconds:g} s, then flat out "
              f"on {', '.join(map(str, args.connections))} connections ({flat_seconds:g} s each)"
              " ...", flush=True)
        rss: dict[str, float] = {}
        results = await drive(config, watched, procs, rss)
        verify = results["verify"]
        if verify["errors"]:
            raise RuntimeError(f"the exchange did not answer every patient with their whole "
                               f"record: {verify['error_kinds']}")
        hie_rss = peak_rss_mb(watched["hie up"], rss.get("hie up", 0.0))
        server_errors = sum(1 for line in (work / "hie-up.log").read_text(
            errors="replace").splitlines() if " ERROR " in line)
        up.terminate()
        up.wait(30)

        # The same load generator against a bare Starlette app.
        print("raw figures: bare Starlette hello ...", flush=True)
        hello = subprocess.Popen([sys.executable, __file__, "--hello-server"],
                                 stdout=subprocess.PIPE)
        procs.popen.append(hello)
        assert hello.stdout is not None
        hello_port = int(await asyncio.to_thread(hello.stdout.readline))
        hello_seconds = max(1.0, flat_seconds / 2)
        hello_phases = [
            {"name": "hello-rate", "kind": "rate", "rate": args.rate,
             "seconds": min(seconds, 10.0), "connections": args.rate_connections},
            *({"name": f"hello-flat-{c}", "kind": "flat", "connections": c,
               "seconds": hello_seconds, "warmup": min(1.0, hello_seconds / 3)}
              for c in args.connections)]
        hello_results = await drive(
            {"host": "127.0.0.1", "port": hello_port, "requests": [["/hello", None]],
             "check_every": 0, "phases": hello_phases},
            {"hello server": psutil.Process(hello.pid)}, procs, {})
        hello.terminate()
        hello.wait(30)
    finally:
        procs.stop_all()
        if servers is not None:
            servers.stop()
        elif db_url and nats_url:  # servers of the user's: leave them as they were found
            await drop_what_the_run_made(db_url, nats_url, consortium)
        shutil.rmtree(work, ignore_errors=True)

    rate = results["rate"]
    flats = {c: results[f"flat-{c}"] for c in args.connections}
    best = max(args.connections, key=lambda c: flats[c]["rps"])
    hellos = {c: hello_results[f"hello-flat-{c}"] for c in args.connections}
    peak = flats[best]
    peak_cpu = peak["server_cpu_s"]
    figures: dict[str, Any] = {
        "p50_ms": rate["p50_ms"], "p90_ms": rate["p90_ms"], "p99_ms": rate["p99_ms"],
        "max_ms": rate["max_ms"], "peak_rps": peak["rps"],
        "rate_offered_per_s": args.rate, "rate_achieved_per_s": rate["rps"],
        "rate_requests": rate["requests"], "rate_errors": rate["errors"],
        "rate_service_p50_ms": rate["service"]["p50_ms"],
        "rate_service_p99_ms": rate["service"]["p99_ms"],
        "rate_send_late_p99_ms": rate["send_late"]["p99_ms"],
        "peak_connections": best,
        "rps_by_connections": {str(c): r["rps"] for c, r in flats.items()},
        "p50_ms_by_connections": {str(c): r["p50_ms"] for c, r in flats.items()},
        "p99_ms_by_connections": {str(c): r["p99_ms"] for c, r in flats.items()},
        "errors": sum(r["errors"] for r in results.values()),
        "error_kinds": {k: v for r in results.values() for k, v in r["error_kinds"].items()},
        "answers_checked": sum(r["checked"] for r in results.values()),
        "server_log_errors": server_errors,
        "patients": args.patients, "entries_per_patient": args.entries,
        "bundle_entries": expected, "institutions": len(INSTITUTIONS),
        "seed_items": total_items, "seed_submissions": submissions,
        "seed_s": round(seeded_s, 1),
        "response_kb": round(peak["response_bytes"] / 1024, 1),
        "cpu_ms_per_request_at_peak": {
            **{name: per_request_ms(cpu, peak) for name, cpu in peak_cpu.items()},
            "load generator": per_request_ms(peak["cpu_s"], peak)},
        "cpu_ms_per_request_at_rate": {
            **{name: per_request_ms(cpu, rate) for name, cpu in rate["server_cpu_s"].items()},
            "load generator": per_request_ms(rate["cpu_s"], rate)},
        "cpu_s_by_phase": {name: {**r["server_cpu_s"], "load generator": r["cpu_s"],
                                  "rest of the machine": r["other_cpu_s"]}
                           for name, r in results.items()},
        # The share of the machine's CPU that went elsewhere (other processes, interrupts)
        # while phase A and the peak run were measured: on a shared machine, read the
        # figures with it.
        "rest_of_machine_share_at_rate": rate["other_share"],
        "rest_of_machine_share_at_peak": peak["other_share"],
        "hie_up_peak_rss_mb": round(hie_rss, 1),
        **raw,
        "hello_rps": max(r["rps"] for r in hellos.values()),
        "hello_rps_by_connections": {str(c): r["rps"] for c, r in hellos.items()},
        "hello_p50_ms": hello_results["hello-rate"]["p50_ms"],
        "hello_p99_ms": hello_results["hello-rate"]["p99_ms"],
        "hello_cpu_ms_per_request": {
            "hello server": per_request_ms(
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])]["server_cpu_s"][
                    "hello server"], hellos[max(hellos, key=lambda c: hellos[c]["rps"])]),
            "load generator": per_request_ms(
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])]["cpu_s"],
                hellos[max(hellos, key=lambda c: hellos[c]["rps"])])},
        "targets": TARGETS,
        "meets_targets": (rate["p50_ms"] is not None and rate["p50_ms"] <= TARGETS["p50_ms"]
                          and rate["p99_ms"] <= TARGETS["p99_ms"]
                          and peak["rps"] >= TARGETS["peak_rps"]),
        "cores": os.cpu_count(),
    }
    return figures


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
    p.add_argument("--seconds", type=float, default=20.0,
                   help="phase A's length; phase B runs half of it per connection count")
    p.add_argument("--flat-seconds", type=float, default=0.0,
                   help="phase B's length per connection count (default: --seconds / 2)")
    p.add_argument("--connections", type=connection_counts, default=[8, 16, 32],
                   help="phase B's connection counts, e.g. 8,16,32")
    p.add_argument("--rate-connections", type=int, default=8,
                   help="phase A's pool of keep-alive connections")
    p.add_argument("--per-submission", type=int, default=500, help="items per envelope (≤ 500)")
    p.add_argument("--check-every", type=int, default=25,
                   help="parse and check every n-th answer of the load phases")
    p.add_argument("--hello-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.hello_server and (args.patients < 1 or args.entries < 1 or args.rate <= 0
                                  or args.seconds <= 0 or not 1 <= args.per_submission <= 500):
        p.error("--patients, --entries, --rate and --seconds must be positive, "
                "--per-submission 1..500")
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
        print("interrupted: everything this run started is stopped and its files removed",
              file=sys.stderr)
        sys.exit(130)
    print(f"at {figures['rate_offered_per_s']:g} req/s: p50 {figures['p50_ms']} ms, p90 "
          f"{figures['p90_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms, "
          f"{figures['rate_errors']} error(s)  [targets p50 ≤ {TARGETS['p50_ms']:g}, "
          f"p99 ≤ {TARGETS['p99_ms']:g}]")
    print(f"flat out: {figures['rps_by_connections']} req/s by connections; peak "
          f"{figures['peak_rps']} req/s  [target ≥ {TARGETS['peak_rps']}]; "
          f"{figures['response_kb']} KB per answer, {figures['bundle_entries']} entries")
    print(f"CPU ms per request at peak: {figures['cpu_ms_per_request_at_peak']}; hie up peak "
          f"RSS {figures['hie_up_peak_rss_mb']} MB; the rest of the machine took "
          f"{figures['rest_of_machine_share_at_rate']:.0%} of its CPU during phase A, "
          f"{figures['rest_of_machine_share_at_peak']:.0%} during the peak run")
    print(f"raw: SELECT 1 {figures['raw_pg_select1_per_s']:,}/s (1 connection), "
          f"{figures['raw_pg_select1_per_s_8_connections']:,}/s (8), "
          f"{figures['raw_pg_pool_select1_per_s']:,}/s through a pool; INSERT+COMMIT "
          f"{figures['raw_pg_commit_per_s']:,}/s (p50 {figures['raw_pg_commit_p50_ms']} ms); "
          f"bare Starlette hello {figures['hello_rps']:,} req/s, p50 {figures['hello_p50_ms']} "
          f"ms at {figures['rate_offered_per_s']:g}/s")
    print(json.dumps(figures, ensure_ascii=False))
