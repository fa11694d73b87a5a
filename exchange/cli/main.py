"""`hie`: run the exchange, seed a demo county, submit records, issue tokens."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exchange.errors import ExchangeError
from exchange.settings import Settings, load_settings

log = logging.getLogger("hie")
_HOURS = 8.0  # a token's default lifetime


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _up(settings: Settings, *, demo: bool, http: bool = True, gateway: bool = True,
              projection: bool = True) -> int:
    from exchange.bootstrap import open_runtime, running_endpoints, serve, write_run_file

    stop = asyncio.Event()
    _stop_on_signals(stop)
    external = running_endpoints(settings) if not settings.embedded else None
    if not (http or projection) and external is None:
        # `hie gateway` joins a running exchange's servers rather than starting its own.
        external = running_endpoints(settings)
    print("starting the exchange (embedded PostgreSQL and NATS unless HIE_DATABASE_URL and "
          "HIE_NATS_URL are set) ...", flush=True)
    workers = settings.gateway_processes if http else 0
    gateway = gateway and not workers  # with gateway processes, `hie up` runs none itself
    async with open_runtime(settings, external, name="hie-" + ("gateway" if not http else "up")) as rt:
        await rt.audit_writer.append({  # every start is a configuration event, audited
            "action": "config.start", "decision": "permit", "reasons": [],
            "role": "admin", "person": f"process:{os.getpid()}",
            "settings": {"consortium": settings.consortium, "embedded": settings.embedded,
                         "gateway": gateway, "gateway_processes": workers, "http": http,
                         "projection": projection,
                         "audit_retention_days": settings.audit_retention_days,
                         "audit_head_seconds": settings.audit_head_seconds}},
            datetime.now(UTC))
        # Everything loaded so far (modules, models, schemas) lives as long as the process:
        # keep it out of the collector's full passes, whose pauses set the latency tail; and
        # collect less often, since validating and rendering items makes many short-lived
        # objects (measured: full passes ~100 → ~45 ms, ~7% more events/s).
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        ready = asyncio.Event()

        def on_ready(url: str) -> None:
            write_run_file(settings, rt.endpoints)
            ready.set()

        runner = asyncio.create_task(serve(rt, stop, http=http, gateway=gateway,
                                           projection=projection, on_http_ready=on_ready))
        if not http:
            print("gateway running; Ctrl-C stops it", flush=True)
        else:
            await asyncio.wait([asyncio.create_task(ready.wait()), runner],
                               return_when=asyncio.FIRST_COMPLETED)
        supervisor = None
        if workers and not runner.done():
            from exchange.ingest.workers import GatewayWorkers

            # The gateways find this exchange's servers through its run file (or HIE_*_URL).
            supervisor = asyncio.create_task(GatewayWorkers(workers, dict(os.environ)).run(stop))
            print(f"{workers} gateway process(es) started", flush=True)
        if demo and not runner.done():
            from exchange.demo.seed import seed_demo

            try:
                print(await seed_demo(rt), flush=True)
            except Exception:
                stop.set()
                await runner
                raise
        elif http and not runner.done():
            print(f"exchange ready: {rt.endpoints.http_url}/fhir/metadata  (Ctrl-C stops it)",
                  flush=True)
        await runner
        if supervisor is not None:
            await supervisor
    print("stopped", flush=True)
    return 0


async def _submit(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.envelope import load_private_key_pem
    from adapters.nats import SubmitClient
    from exchange.bootstrap import running_endpoints
    from exchange.cli.submit import (
        Journal,
        MappingError,
        Progress,
        Reader,
        describe,
        expand,
        find_mapping,
        is_directory_bundle,
    )
    from exchange.servers.nats import connect

    key_path = Path(args.key) if args.key else settings.keys_dir / f"{args.institution}.pem"
    try:
        key = load_private_key_pem(key_path.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"cannot read the institution's signing key {key_path}: {exc}", file=sys.stderr)
        return 2
    files = expand(args.paths)
    try:
        mapping = find_mapping(files, args.institution, args.mapping)
    except (OSError, MappingError) as exc:
        for problem in getattr(exc, "problems", [exc]):
            print(f"mapping file: {problem}", file=sys.stderr)
        return 2
    # Directory bundles (organisations, practitioners) resolve references; each is read once.
    directories = {f: data for f in files if f.suffix.lower() == ".json"
                   and is_directory_bundle(data := f.read_bytes())}
    facilities = dict(f.split("=", 1) for f in args.facility if "=" in f)
    if len(facilities) != len(args.facility):
        print("--facility takes HL7_FACILITY=institution-code", file=sys.stderr)
        return 2
    reader = Reader(args.institution, key, batch=args.batch, mapping=mapping,
                    directories=list(directories.values()), facilities=facilities)
    journal = Journal(settings.data_dir / "submitted" / f"{args.institution}.ids")
    files = [f for f in files if f not in directories]
    for f in directories:
        print(f"{f.name}: directory bundle (references resolved from it; nothing to send)")

    # The validation report first: every file read, every refusal said, before anything is sent.
    results, problems = [], 0
    for path in files:
        result = reader.read(path)
        for problem in result.report.problems:
            problems += 1
            print(f"{path.name}: not sent: {problem}")
        results.append(result)
    total = sum(len(e["events"]) for r in results for e in r.envelopes)
    if args.dry_run:
        for result in results:
            print(describe(result))
        print(f"dry run: {len(files)} file(s), "
              f"{sum(len(r.envelopes) for r in results)} submission(s) with {total} item(s) "
              f"would be sent; {problems} problem(s) found")
        return 1 if problems else 0

    endpoints = running_endpoints(settings)
    nc = await connect(endpoints.nats_url, f"hie-submit-{args.institution}")
    accepted = held = rejected = 0
    progress = Progress(total)
    try:
        client = SubmitClient(nc, settings.consortium, args.institution)
        for result in results:
            todo = [e for e in result.envelopes if e["submission_id"] not in journal.ids]
            skipped = len(result.envelopes) - len(todo)
            held += skipped
            progress.advance(sum(len(e["events"]) for e in result.envelopes
                                 if e["submission_id"] in journal.ids))
            receipts = await client.submit(
                todo, on_receipt=lambda r, by_id={e["submission_id"]: e for e in todo}:
                progress.advance(len(by_id[r["submission_id"]]["events"])))
            now_accepted = []
            for envelope in todo:
                receipt = receipts[envelope["submission_id"]]
                if receipt["status"] == "accepted":
                    now_accepted.append(envelope["submission_id"])
                    if receipt.get("repeat"):
                        held += 1
                    else:
                        accepted += 1
                else:
                    rejected += 1
                    for problem in receipt["problems"]:
                        print(f"\n{result.path.name}: rejected: "
                              f"{json.dumps(problem, ensure_ascii=False)}")
            journal.add(now_accepted)
            if result.envelopes:
                state = "accepted" if not any(
                    receipts.get(e["submission_id"], {}).get("status") == "rejected"
                    for e in todo) else "partly rejected"
                note = " (already held: nothing stored twice)" if skipped or any(
                    receipts[e["submission_id"]].get("repeat") for e in todo) else ""
                print(f"\r{result.path.name}: {state}, {len(result.envelopes)} submission(s){note}",
                      file=sys.stdout)
        progress.finish()
    finally:
        await nc.drain()
    print(f"{accepted} submission(s) newly accepted, {held} already held, {rejected} rejected; "
          f"{problems} problem(s) found before sending")
    return 1 if rejected or problems else 0


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    """`hie token ...` issues a token; `hie token revoke ...` revokes one, or a person's."""
    if args.action == "revoke":
        return await _revoke(settings, args)
    from exchange.auth.tokens import TokenIssuer

    if args.role is None:
        return _usage("hie token: --role is required (or `hie token revoke ...`)")
    if args.token_id is not None or args.reason is not None:
        return _usage("hie token: --token-id and --reason belong to `hie token revoke`")
    if args.role == "patient":
        # A patient's token names the patient's regional id, never the resident ID itself.
        if args.patient is None or args.person is not None or args.institution is not None:
            return _usage("hie token: the patient role takes --patient RESIDENT_ID (and no "
                          "--person or --institution)")
        person, institution = _patient_person(settings, args.patient), "patient"
        if person is None:
            return 2
    else:
        if args.patient is not None:
            return _usage("hie token: --patient is only for --role patient")
        if not args.person or not args.institution:
            return _usage("hie token: --person and --institution are required")
        person, institution = args.person, args.institution
    issuer = TokenIssuer(settings.secrets.token_key)
    token, ident = issuer.issue(person=person, institution=institution, role=args.role,
                                now=datetime.now(UTC), ttl=timedelta(hours=args.hours))
    if not await _audit_admin(settings, {
            "action": "token.issue", "person": ident.person, "role": ident.role,
            "institution": ident.institution, "token_id": ident.token_id,
            "expires_at": ident.expires_at.isoformat()}):
        return 1
    if args.role == "patient":
        print(f"the patient's regional id: {ident.person}", file=sys.stderr)
    print(token)
    return 0


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke one token, or every token a person holds now; committed only once audited."""
    import asyncpg

    from audit.postgres import AuditStore, AuditWriteError
    from exchange.auth.revocations import Revocations
    from exchange.bootstrap import migrate_stored_tables, running_endpoints

    if args.role is not None or args.institution is not None or args.hours != _HOURS:
        return _usage("hie token revoke: takes --token-id ID, --person P or --patient "
                      "RESIDENT_ID, and optionally --reason TEXT")
    if sum(x is not None for x in (args.token_id, args.person, args.patient)) != 1:
        return _usage("hie token revoke: name exactly one of --token-id, --person, --patient")
    person = args.person
    if args.patient is not None and (person := _patient_person(settings, args.patient)) is None:
        return 2
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "action": "token.revoke", "role": "admin", "decision": "permit", "reasons": [],
        "token_id": args.token_id, "person": person, "reason": args.reason,
        "institution": "patient" if args.patient else None,
        "revoked_before": now.isoformat() if person else None}
    pool = await asyncpg.create_pool(running_endpoints(settings).database_url, min_size=1,
                                     max_size=2)
    try:
        revocations, store = Revocations(pool), AuditStore(pool)
        await migrate_stored_tables(pool)
        async with pool.acquire() as conn, conn.transaction():
            if args.token_id is not None:
                record["already_revoked"] = not await revocations.revoke_token(
                    args.token_id, at=now, reason=args.reason, conn=conn)
            else:
                await revocations.revoke_person(person, before=now, conn=conn)
            # The audit append commits on its own connection; the revocation commits only
            # after it, so no revocation takes effect without its audit record.
            await store.append(record | {"operator": _operator()}, now)
    except AuditWriteError:
        print("hie token revoke: the audit log could not record the revocation, so nothing "
              "was revoked; try again", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    what = f"token {args.token_id}" if args.token_id else "every token issued until now to " + (
        "this patient" if args.patient else f"person {person}")
    print(f"revoked {what}; running exchanges refuse it within seconds")
    return 0


def _patient_person(settings: Settings, resident_id: str) -> str | None:
    """The patient's regional id (the token's person) from a resident ID; None if invalid."""
    from domain.errors import InvalidResidentId
    from domain.identity import patient_id_for
    from domain.resident_id import parse_resident_id

    if resident_id == "-":  # from standard input: out of the shell history and process list
        resident_id = sys.stdin.readline().strip()
    try:
        return str(patient_id_for(parse_resident_id(resident_id), settings.secrets.pseudonym_key))
    except InvalidResidentId as exc:  # the message never repeats the number
        print(f"hie token: --patient: {exc.message}", file=sys.stderr)
        return None


def _usage(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _operator() -> str:
    """Who ran the command, as far as this machine knows: its login name."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"


async def _audit_admin(settings: Settings, record: dict[str, Any]) -> bool:
    """Token issue is audited; with no reachable audit log, no token is issued."""
    import asyncpg

    from audit.postgres import AuditStore, AuditWriteError
    from exchange.bootstrap import migrate_stored_tables, running_endpoints

    pool = await asyncpg.create_pool(running_endpoints(settings).database_url, min_size=1,
                                     max_size=1)
    try:
        store = AuditStore(pool)
        await migrate_stored_tables(pool)
        await store.append(record | {"decision": "permit", "reasons": [],
                                     "operator": _operator()}, datetime.now(UTC))
    except AuditWriteError:
        print("hie token: the audit log could not record the token, so none was issued; try "
              "again", file=sys.stderr)
        return False
    finally:
        await pool.close()
    return True


async def _audit_verify(settings: Settings) -> int:
    import asyncpg

    from exchange.bootstrap import running_endpoints
    from exchange.ingest.ledger import Ledger
    from exchange.servers.audit_heads import HeadSigner, verify_ledger, verify_log

    database_url = running_endpoints(settings).database_url
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ledger = await asyncio.to_thread(Ledger, database_url, settings.secrets.ledger_cipher_key,
                                     settings.secrets.pseudonym_key)
    try:
        report = await verify_log(pool, HeadSigner(settings.consortium,
                                                   settings.secrets.audit_key))
        if report.ok:  # the log holds together: now check the ledger against its anchors
            report.findings += await verify_ledger(pool, ledger)
    finally:
        await pool.close()
        ledger.close()
    if report.ok:
        print(f"audit log intact: {report.records} records, {report.heads_checked} signed "
              "head(s) match; every ledger submission matches its anchor")
        return 0
    first = report.findings[0]
    print(f"audit log NOT intact: {first.message} [{first.code}]")
    if first.seq is not None:
        print(f"first bad record: {first.seq}")
    for finding in report.findings[1:20]:
        print(f"also: {finding.message} [{finding.code}]")
    return 1


async def _notifications(settings: Settings, args: argparse.Namespace) -> int:
    """Print an institution's notifications (JSON lines), acknowledging each once printed:
    what arrived while it was offline comes first, in order."""
    from adapters.nats import NotificationClient
    from exchange.bootstrap import running_endpoints
    from exchange.servers.nats import connect

    nc = await connect(running_endpoints(settings).nats_url, f"hie-notifications-{args.institution}")
    client = NotificationClient(nc, settings.consortium, args.institution)
    shown = 0
    try:
        while True:
            got = await client.fetch(batch=100, timeout=1.0, handle=lambda note: print(
                json.dumps(note, ensure_ascii=False), flush=True))
            shown += len(got)
            if not got and not args.follow:
                break
    finally:
        await client.close()
        await nc.close()
    print(f"{shown} notification(s) for {args.institution}", file=sys.stderr)
    return 0


async def _rebuild(settings: Settings) -> int:
    """Empty the read models; the running exchange replays the whole ledger into them."""
    import asyncpg

    from audit.postgres import AuditStore
    from exchange.bootstrap import running_endpoints
    from projections.postgres import PatientRecordProjection

    pool = await asyncpg.create_pool(running_endpoints(settings).database_url, min_size=1,
                                     max_size=2)
    try:
        await AuditStore(pool).append({"action": "admin.projections.rebuild", "role": "admin",
                                       "decision": "permit", "reasons": []}, datetime.now(UTC))
        await PatientRecordProjection(pool, _no_read).rebuild()
    finally:
        await pool.close()
    print("read models emptied; the running exchange is replaying the ledger into them "
          "(reads show less until it has caught up)")
    return 0


async def _no_read(after: int, limit: int) -> list[Any]:
    return []


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hie", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the exchange (embedded servers unless HIE_*_URL are set)")
    sub.add_parser("demo", help="run the exchange with a seeded demo county")
    sub.add_parser("gateway", help="run only the gateway against a running exchange's servers")
    s = sub.add_parser("submit", help="submit HL7 v2, FHIR R4 and CSV files (or directories) "
                       "through NATS; exit 1 if anything was refused")
    s.add_argument("paths", nargs="+", help="files or directories (walked recursively)")
    s.add_argument("--institution", required=True, help="the sending institution's code")
    s.add_argument("--key", help="its Ed25519 private key (PEM); default <data dir>/keys/<code>.pem")
    s.add_argument("--mapping", help="the CSV mapping file (TOML); default "
                   "<institution>.mapping.toml beside the exports")
    s.add_argument("--batch", type=int, default=500, help="items per submission (default 500)")
    s.add_argument("--facility", action="append", default=[], metavar="HL7_FACILITY=CODE",
                   help="an HL7 receiving facility (MSH-6) and the consortium institution it "
                        "is, for referrals (REF^I12); repeatable")
    s.add_argument("--dry-run", action="store_true",
                   help="print the validation report and what would be sent; send nothing")
    t = sub.add_parser("token", help="issue a signed bearer token, or revoke tokens "
                       "(hie token revoke)", description="Issue: hie token --person P "
                       "--institution I --role R [--hours H], or hie token --role patient "
                       "--patient RESIDENT_ID. Revoke: hie token revoke --token-id ID | "
                       "--person P | --patient RESIDENT_ID [--reason TEXT].")
    t.add_argument("action", nargs="?", choices=["revoke"],
                   help="revoke: revoke one token, or every token a person holds now")
    t.add_argument("--person", help="the person the token names (or whose tokens to revoke)")
    t.add_argument("--institution")
    t.add_argument("--role", choices=["physician", "nurse", "patient", "regulator", "admin"])
    t.add_argument("--patient", metavar="RESIDENT_ID", help="for the patient role: the "
                   "patient's resident ID ('-': read it from standard input); the token names "
                   "their regional id")
    t.add_argument("--hours", type=float, default=_HOURS)
    t.add_argument("--token-id", help="revoke: the token's id (from the audit log; a hospital "
                   "login's token is <institution>:<jti>)")
    t.add_argument("--reason", help="revoke: why (kept in the audit log)")
    a = sub.add_parser("audit", help="the audit log")
    a.add_argument("what", choices=["verify"], help="verify: recompute the Merkle log from its "
                   "rows, check every signed head, name the first bad record")
    n = sub.add_parser("notifications", help="print an institution's notifications (referral "
                       "steps), acknowledging them; what it missed while away comes first")
    n.add_argument("--institution", required=True)
    n.add_argument("--follow", action="store_true", help="keep waiting for more")
    r = sub.add_parser("projections", help="the read models")
    r.add_argument("what", choices=["rebuild"], help="rebuild: empty them; the running "
                   "exchange replays the ledger into them")
    return p


def _run_fast(main: Any) -> Any:
    """Run the exchange's loops on uvloop where it is installed (its event loop and the
    asyncpg and NATS protocols on it cost a fraction of the standard loop's CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = load_settings()
        if args.command in ("up", "demo", "gateway"):
            gateway_only = args.command == "gateway"
            return _run_fast(_up(settings, demo=args.command == "demo", http=not gateway_only,
                                   projection=not gateway_only))
        if args.command == "submit":
            return asyncio.run(_submit(settings, args))
        if args.command == "token":
            return asyncio.run(_token(settings, args))
        if args.command == "audit":
            return asyncio.run(_audit_verify(settings))
        if args.command == "notifications":
            return asyncio.run(_notifications(settings, args))
        if args.command == "projections":
            return asyncio.run(_rebuild(settings))
    except ExchangeError as exc:
        print(f"hie: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2

