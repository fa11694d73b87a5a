"""The restore drill, as an operator runs it with the `hie` command: a running exchange with
institutions, accepted and rejected submissions, reads and referrals is backed up while it
runs (`hie backup`); `hie restore` makes it again in a new data directory on fresh servers,
refusing first a damaged backup, a data directory that holds data and the wrong keys; the
restored exchange's audit log verifies, its read models equal a rebuild row for row, its
streams hold the receipts, dead letters and notifications with their consumers, and it
accepts a new submission while refusing an old one again."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

from adapters.envelope import encode, load_private_key_pem
from exchange.cli.submit_files import Reader
from exchange.demo.data import demo_bundles, demo_residents
from exchange.servers.nats import stream_name
from projections.tables import NAME as PROJECTION
from projections.tables import TABLES
from tests.e2e.drive import Demo, Served, hie

STREAMS = ("SUBMIT", "RECEIPTS", "DEADLETTER", "NOTIFY")


def endpoints(data_dir: Path) -> dict[str, Any]:
    return dict(json.loads((data_dir / "run.json").read_text()))


def bundle_file(folder: Path, name: str, resident_no: int) -> Path:
    """A village clinic's visit of one synthetic resident as a FHIR bundle (five items)."""
    resident = demo_residents(count=8)[resident_no]
    path = folder / name
    path.write_text(json.dumps(demo_bundles("taoyuan-vc", [resident])[0], ensure_ascii=False))
    return path


async def _streams(url: str) -> dict[str, Any]:
    """What the drill compares: each stream's last sequence and message count, each durable
    consumer's delivered and acknowledged sequences and what it still has to deliver, and the
    submission ids of the dead letters."""
    nc = await nats.connect(url)
    try:
        js, out = nc.jetstream(), {}
        for what in STREAMS:
            name = stream_name("demo", what)
            info = await js.stream_info(name)
            out[what] = (info.state.messages, info.state.last_seq)
            for c in await js.consumers_info(name):
                if c.config.durable_name:
                    out[f"{what}/{c.name}"] = (
                        c.delivered.stream_seq,
                        c.ack_floor.stream_seq,
                        c.num_pending,
                    )
        dead = stream_name("demo", "DEADLETTER")
        kept = [await js.get_msg(dead, seq) for seq in range(1, out["DEADLETTER"][1] + 1)]
        out["dead_letters"] = sorted(json.loads(m.data)["submission_id"] for m in kept)
        return out
    finally:
        await nc.close()


def streams(data_dir: Path) -> dict[str, Any]:
    return asyncio.run(_streams(endpoints(data_dir)["nats_url"]))


async def _read_models(url: str, *, after_rebuild: bool = False) -> dict[str, list[str]]:
    """Every row of every read model (sorted); after a rebuild, once the replay has reached
    the end of the ledger."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 60
        head = await conn.fetchval("SELECT max(notification_id) FROM ledger_events")
        while after_rebuild:
            at = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = $1", PROJECTION
            )
            if at is not None and at >= head:
                break
            assert time.monotonic() < deadline, "the rebuild did not catch up within 60 s"
            await asyncio.sleep(0.2)
        out = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT * FROM {table}")
            out[table] = sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)
        return out
    finally:
        await conn.close()


def read_models(data_dir: Path, *, after_rebuild: bool = False) -> dict[str, list[str]]:
    url = endpoints(data_dir)["database_url"]
    return asyncio.run(_read_models(url, after_rebuild=after_rebuild))


async def _submissions(url: str, after: int, count: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = await conn.fetch(
                "SELECT record_text FROM audit_log WHERE action = 'submission' "
                "AND institution = 'taoyuan-vc' ORDER BY seq"
            )
            if len(rows) >= after + count or time.monotonic() > deadline:
                return [json.loads(r["record_text"]) for r in rows][after:]
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def submissions(data_dir: Path, after: int = 0, count: int = 0) -> list[dict[str, Any]]:
    """The village clinic's submissions as the audit log recorded the exchange's answers:
    those after the first ``after``, once there are ``count`` of them (30 s at most)."""
    return asyncio.run(_submissions(endpoints(data_dir)["database_url"], after, count))


def actions(data_dir: Path) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(endpoints(data_dir)["database_url"])
        try:
            return {r["action"] for r in await conn.fetch("SELECT DISTINCT action FROM audit_log")}
        finally:
            await conn.close()

    return asyncio.run(read())


def resend(data_dir: Path, path: Path, key: Path, *, batch: int) -> None:
    """Send a file's envelopes as `hie submit --batch` cuts them (the same submission ids),
    straight to the clinic's submit subject, whatever receipts the stream already holds."""
    reader = Reader("taoyuan-vc", load_private_key_pem(key.read_bytes()), batch=batch)

    async def send() -> None:
        nc = await nats.connect(endpoints(data_dir)["nats_url"])
        try:
            for envelope in reader.read(path).envelopes:
                await nc.jetstream().publish("hie.demo.submit.taoyuan-vc", encode(envelope))
        finally:
            await nc.close()

    asyncio.run(send())


def test_a_backup_of_a_running_exchange_restores_into_fresh_servers_whole(
    tmp_path: Path,
) -> None:
    live, backup, restored = tmp_path / "live", tmp_path / "backup", tmp_path / "restored"

    # A running exchange: the demo county (institutions, submissions, consents, referrals
    # and their notifications).
    demo = Demo(live)
    try:
        # A village clinic sends a visit (accepted), then the same records again under new
        # submission ids (--batch 1): the ledger refuses them, into the dead-letter stream.
        visit = bundle_file(tmp_path, "visit.json", 7)
        sent = hie("submit", str(visit), "--institution", "taoyuan-vc", env=demo.env)
        assert "1 submission(s) newly accepted" in sent.stdout, sent.stdout + sent.stderr
        split = ("submit", str(visit), "--institution", "taoyuan-vc", "--batch", "1")
        refused = hie(*split, env=demo.env)
        assert (
            refused.returncode == 1
            and "0 submission(s) newly accepted, 0 already held, 5 rejected" in refused.stdout
        )

        # Reads, permitted and refused: each is in the audit log.
        consented, unconsented = demo.patients[0], demo.patients[1]
        doctor = {"Authorization": f"Bearer {demo.physician}", "X-Purpose-Of-Use": "TREAT"}
        with httpx.Client(base_url=demo.url) as http:
            record = http.get(f"/fhir/Patient/{consented}/$everything", headers=doctor)
            assert record.status_code == 200
            denied = http.get(f"/fhir/Patient/{unconsented}/$everything", headers=doctor)
            assert denied.status_code == 403

        # The township centre collects its notifications; the county hospital has not yet.
        told = hie("notifications", "--institution", "dongcheng-thc", env=demo.env)
        assert len(told.stdout.splitlines()) == 5, told.stdout + told.stderr
        before = streams(live)
        assert before["DEADLETTER"][0] == 5 and before["NOTIFY/notify-county-hospital"][2] > 0

        # The backup, taken while the exchange runs; the secrets stay out of it.
        took = hie("backup", "--to", str(backup), env=demo.env)
        assert took.returncode == 0, took.stdout + took.stderr
        assert (
            "The secrets are NOT in this backup" in took.stdout and "key custodian" in took.stdout
        )
        manifest = json.loads((backup / "manifest.json").read_text())
        assert not (backup / "secrets").exists()
        for secret in (live / "secrets").iterdir():
            value = secret.read_text().strip()
            hexed = base64.b64decode(value).hex()
            for path in [backup / "manifest.json", *(backup / "jetstream").glob("*.json")]:
                assert value not in path.read_text() and hexed not in path.read_text()
        assert all(
            stat.S_IMODE(p.stat().st_mode) == 0o600 for p in backup.rglob("*") if p.is_file()
        )

        # One more with the secrets, when asked: it warns.
        with_keys = tmp_path / "backup-with-secrets"
        took_keys = hie("backup", "--to", str(with_keys), "--include-secrets", env=demo.env)
        assert took_keys.returncode == 0 and "WARNING" in took_keys.stderr, took_keys.stderr

        # After the backup, a visit of another resident: it is not in what was backed up.
        later = bundle_file(tmp_path, "later.json", 6)
        after = hie("submit", str(later), "--institution", "taoyuan-vc", env=demo.env)
        assert "1 submission(s) newly accepted" in after.stdout, after.stdout + after.stderr
    finally:
        assert demo.stop() == 0
    key = live / "keys" / "taoyuan-vc.pem"  # the clinic's own key, kept by the clinic

    # The restore refuses, naming why and writing nothing: a backup with a changed file ...
    env = {**demo.env, "HIE_DATA_DIR": str(restored)}
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    notify = damaged / "jetstream" / "HIE_DEMO_NOTIFY.snapshot"
    data = bytearray(notify.read_bytes())
    data[len(data) // 2] ^= 0xFF
    notify.write_bytes(bytes(data))
    bad = hie("restore", "--from", str(damaged), env=env)
    assert bad.returncode == 2 and "jetstream/HIE_DEMO_NOTIFY.snapshot" in bad.stderr, bad.stderr
    # ... a data directory that holds data ...
    full = hie("restore", "--from", str(backup), env=demo.env)
    assert full.returncode == 2 and "already holds data" in full.stderr, full.stderr
    # ... no keys, or a key that is not the one the data was written with.
    bare = hie("restore", "--from", str(backup), env=env)
    assert bare.returncode == 2 and "ledger_cipher_key: missing" in bare.stderr, bare.stderr
    shutil.copytree(live / "secrets", restored / "secrets")
    right = (restored / "secrets" / "projection_key").read_text()
    (restored / "secrets" / "projection_key").write_text(base64.b64encode(b"k" * 32).decode())
    wrong = hie("restore", "--from", str(backup), env=env)
    assert wrong.returncode == 2, wrong.stderr
    assert "projection_key: not the key this backup's data was written with" in wrong.stderr
    assert not (restored / "postgres").exists() and not (restored / "nats").exists()

    # With the key custodian's keys, the restore goes through, on fresh servers.
    (restored / "secrets" / "projection_key").write_text(right)
    began = time.monotonic()
    done = hie("restore", "--from", str(backup), env=env)
    took_s = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    position = manifest["database"]["ledger_position"]
    assert f"ledger to position {position} (backup: {position})" in done.stdout
    print(f"\nbackup: {took.stdout.splitlines()[0]}\nrestore: {took_s:.1f} s")

    up = Served(restored)
    try:
        # The audit log verifies: every record, signed head and ledger anchor.
        verified = hie("audit", "verify", env=env)
        assert verified.returncode == 0 and "audit log intact" in verified.stdout, verified.stdout

        # The reads before the backup are in its audit log, for the regulator to see (the
        # demo's regulator token still works: the same token key); so are the backup and
        # the restore themselves.
        url = re.search(r"exchange ready: (http://\S+)/fhir/metadata", up.out).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=url) as http:
            events = http.get(
                "/fhir/AuditEvent",
                params={"patient": unconsented},
                headers={"Authorization": f"Bearer {demo.regulator}"},
            )
            assert [e["resource"]["outcome"] for e in events.json()["entry"]] == ["4"]
        assert {"admin.backup", "admin.restore"} <= actions(restored)

        # The streams hold what they held at the backup, with their consumers: the receipts,
        # the dead letters, the notifications (the county hospital's still waiting for it).
        assert streams(restored) == before
        waiting = hie("notifications", "--institution", "county-hospital", env=env)
        assert len(waiting.stdout.splitlines()) == before["NOTIFY/notify-county-hospital"][2]
        assert hie("notifications", "--institution", "dongcheng-thc", env=env).stdout == ""

        # The read models equal a rebuild from the restored ledger, row for row.
        restored_rows = read_models(restored)
        assert restored_rows["record_entries"] and restored_rows["referrals"]
        rebuilt = hie("projections", "rebuild", env=env)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert read_models(restored, after_rebuild=True) == restored_rows

        # It takes a new submission (the visit sent after the backup is new to it) ...
        held = submissions(restored)
        new = hie("submit", str(later), "--institution", "taoyuan-vc", "--key", str(key), env=env)
        assert "1 submission(s) newly accepted, 0 already held" in new.stdout, new.stdout
        # ... and refuses the old ones again, from its restored ledger: the clinic's system
        # sends the same envelopes once more (same submission ids, signed anew); the accepted
        # one is held already (a repeat, at its first position), the refused ones stay refused.
        resend(restored, visit, key, batch=500)
        resend(restored, visit, key, batch=1)
        answered = submissions(restored, after=len(held), count=1 + 1 + 5)
        first = {r["submission_id"]: r for r in held if r["decision"] == "accepted"}
        accepted = [r for r in answered if r["decision"] == "accepted"]
        assert sorted((r["submission_id"] in first, r["repeat"]) for r in accepted) == [
            (False, False),  # the visit sent after the backup: new here
            (True, True),  # the visit sent before it: a repeat ...
        ]
        [repeat] = [r for r in accepted if r["repeat"]]
        assert repeat["position"] == first[repeat["submission_id"]]["position"]  # ... as held
        refusals = [r for r in answered if r["decision"] == "rejected"]
        assert [x["code"] for r in refusals for x in r["reasons"]] == [
            "submission.rejected_before"
        ] * 5
    finally:
        assert up.stop() == 0

    # A backup made with its secrets restores without the key custodian, and says so.
    elsewhere = tmp_path / "restored-with-secrets"
    own = hie("restore", "--from", str(with_keys), env={**env, "HIE_DATA_DIR": str(elsewhere)})
    assert own.returncode == 0, own.stdout + own.stderr
    assert "secrets taken from the backup" in own.stderr
    assert stat.S_IMODE((elsewhere / "secrets" / "ledger_cipher_key").stat().st_mode) == 0o600
