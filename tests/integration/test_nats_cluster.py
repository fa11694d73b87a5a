"""The exchange on a 3-node JetStream cluster with TLS and one NATS user per member.

Each member's credentials (from `hie institution add`) publish its own submissions and read
its own receipts and notifications, and nothing else: each refusal below is the server's
permission error, which the client sees in its error callback (a refused publish only times
out at the publisher — DESIGN.md's traps). Without credentials, or without the county CA,
nothing connects. A member removed on the running cluster is cut off without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from nats.errors import Error as NatsError

from adapters.envelope import build_envelope, new_private_key, private_key_pem
from adapters.nats import NotificationClient, SubmitClient
from cryptoprofile import public_key_pem
from exchange.cli.institutions import add, remove
from exchange.demo.data import demo_bundles, demo_residents
from exchange.servers.nats import stream_name
from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority, inbox_prefix
from exchange.settings import Settings
from tests.factories import encounter_item, resident
from tests.integration.conftest import running
from tests.integration.nats_cluster_fixtures import Cluster, cluster, on_cluster

__all__ = ["cluster"]  # the module's fixture

STREAMS = ("SUBMIT", "RECEIPTS", "AUDIT", "DEADLETTER", "NOTIFY")
# How long a refused action waits for the answer that never comes: what shows the refusal is
# the server's permission error naming the subject, so the client's default 5 s proves no more.
UNANSWERED = 0.5


async def add_member(settings: Settings, code: str) -> tuple[object, Path]:
    """`hie institution add` for ``code``: its signing key and its credentials file."""
    key = new_private_key(settings.profile)
    pem = settings.data_dir / f"{code}.pub.pem"
    pem.write_bytes(public_key_pem(key))
    creds = settings.data_dir / f"{code}.creds"
    assert await add(settings, code, "测试卫生院", "township_health_centre", pem, creds) == 0
    return key, creds


def envelope(code: str, key: object, n: int) -> dict:
    rid = resident(n)
    return build_envelope(
        institution=code, key=key, sent_at=datetime.now(UTC), items=[encounter_item(rid, f"e-{n}")]
    )  # type: ignore[arg-type]


async def test_streams_are_replicated_and_a_member_submits_with_its_own_user(
    cluster: Cluster, settings: Settings
) -> None:
    async with on_cluster(cluster, settings) as on, running(on) as ex:
        js = ex.rt.nc.jetstream()
        for what in STREAMS:
            info = await js.stream_info(stream_name(on.consortium, what))
            assert info.config.num_replicas == 3, what
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, what

        key, creds = await add_member(on, "thc-a")
        member = await cluster.client(creds, inbox=inbox_prefix("thc-a"))
        try:
            sent = [envelope("thc-a", key, n) for n in range(3)]
            receipts = await SubmitClient(member, on.consortium, "thc-a").submit(sent, wait=20)
            assert {r["status"] for r in receipts.values()} == {"accepted"}
            # Its notifications come through its own durable consumer (none yet).
            notes = NotificationClient(member, on.consortium, "thc-a")
            assert await notes.waiting() == 0  # its user may ask its consumer's count
            assert await notes.fetch(timeout=0.5) == []
            await notes.close()
        finally:
            await member.close()


async def refused(errors: list[str], action: object, subject_part: str) -> None:
    """``action`` fails (as a timeout or an error) and the server says why: a permission
    violation naming the subject."""
    with pytest.raises((TimeoutError, NatsError)):
        await action  # type: ignore[misc]
    await violated(errors, subject_part)


async def violated(errors: list[str], subject_part: str) -> None:
    """The server said a permission violation naming ``subject_part``."""
    for _ in range(20):
        if any("ermission" in e and subject_part.lower() in e.lower() for e in errors):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no permission violation for {subject_part}: {errors}")


async def test_a_members_user_reaches_nothing_beyond_its_own(
    cluster: Cluster, settings: Settings
) -> None:
    async with on_cluster(cluster, settings) as on, running(on):
        _, creds_a = await add_member(on, "thc-a")
        await add_member(on, "thc-b")
        errors: list[str] = []
        a = await cluster.client(creds_a, inbox=inbox_prefix("thc-a"), errors=errors)
        js, c = a.jetstream(timeout=UNANSWERED), on.consortium
        try:
            await refused(
                errors,
                js.publish(f"hie.{c}.submit.thc-b", b"{}", timeout=UNANSWERED),
                "submit.thc-b",
            )
            # Another member's receipts: neither its consumer, nor the subject itself.
            receipts = stream_name(c, "RECEIPTS")
            await refused(
                errors,
                a.request(
                    f"$JS.API.CONSUMER.MSG.NEXT.{receipts}.receipts-thc-b", b"1", timeout=UNANSWERED
                ),
                "receipts-thc-b",
            )
            await a.subscribe(f"hie.{c}.receipt.thc-b")
            await violated(errors, "receipt.thc-b")
            # The gateway's consumer, and the streams themselves.
            submit = stream_name(c, "SUBMIT")
            await refused(
                errors,
                a.request(f"$JS.API.CONSUMER.MSG.NEXT.{submit}.gateway", b"1", timeout=UNANSWERED),
                f"{submit}.gateway",
            )
            await refused(errors, js.purge_stream(submit), "STREAM.PURGE")
            await refused(errors, js.delete_stream(stream_name(c, "AUDIT")), "STREAM.DELETE")
            await refused(errors, js.add_consumer(receipts, durable_name="mine"), "CONSUMER")
            # Replies to others: every other inbox is closed to it.
            await a.subscribe("_INBOX.>")
            await violated(errors, '"_INBOX.>"')
        finally:
            await a.close()


async def test_without_credentials_or_the_county_ca_nothing_connects(
    cluster: Cluster, settings: Settings
) -> None:
    async with on_cluster(cluster, settings) as on:
        errors: list[str] = []
        with pytest.raises(Exception):  # noqa: B017 - the server closes it: no user
            await cluster.client(None, errors=errors)
        assert any("uthorization" in e for e in errors), errors
        # The right user but a client that does not trust the county's CA: the TLS handshake
        # fails before any credential is shown.
        with pytest.raises(Exception):  # noqa: B017
            await nats.connect(
                on.nats_url.split(","),  # type: ignore[union-attr]
                tls=ssl.create_default_context(),
                user_credentials=str(on.nats_creds),
                max_reconnect_attempts=0,
                connect_timeout=2,
                allow_reconnect=False,
            )


async def test_a_removed_member_is_cut_off_on_the_running_cluster(
    cluster: Cluster, settings: Settings
) -> None:
    async with on_cluster(cluster, settings) as on, running(on):
        key, creds = await add_member(on, "thc-r")
        closed = asyncio.Event()
        member = await cluster.client(creds, inbox=inbox_prefix("thc-r"), closed=closed)
        receipts = await SubmitClient(member, on.consortium, "thc-r").submit(
            [envelope("thc-r", key, 1)], wait=20
        )
        assert next(iter(receipts.values()))["status"] == "accepted"

        assert await remove(on, "thc-r", "left the consortium") == 0
        # Its open connection is closed by the cluster (its reconnects are refused) ...
        await asyncio.wait_for(closed.wait(), 30)
        # ... and its credentials no longer work anywhere in the cluster.
        errors: list[str] = []
        with pytest.raises(Exception):  # noqa: B017
            await cluster.client(creds, inbox=inbox_prefix("thc-r"), errors=errors)
        assert any("uthorization" in e or "revoked" in e.lower() for e in errors), errors
        # The removal is in the audit log.
        async with running_pool(on) as pool:
            rows = await pool.fetch(
                "SELECT record_text FROM audit_log WHERE record_text LIKE '%institution.%'"
            )
        actions = [json.loads(r["record_text"])["action"] for r in rows]
        assert actions.count("institution.add") == 1 and actions.count("institution.remove") == 1


def running_pool(settings: Settings):  # type: ignore[no-untyped-def]
    from exchange.cli.connect import database

    return database(settings, connections=1)


async def test_a_member_submits_with_hie_submit_creds_and_reads_over_https(
    cluster: Cluster, settings: Settings
) -> None:
    server = cluster.ca.issue(f"http-{settings.consortium}", ["127.0.0.1", "localhost"])
    tls = dataclasses.replace(settings, http_cert=server.cert, http_key=server.key)
    async with on_cluster(cluster, tls) as on, running(on) as ex:
        key, creds = await add_member(on, "thc-cli")
        key_pem = on.data_dir / "thc-cli.pem"
        key_pem.write_bytes(private_key_pem(key))
        bundle = on.data_dir / "visit.json"
        bundle.write_text(
            json.dumps(demo_bundles("thc-cli", demo_residents(1))[0], ensure_ascii=False)
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HIE_")},
            "HIE_DATA_DIR": str(on.data_dir / "adapter-host"),
            "HIE_CONSORTIUM": on.consortium,
            "HIE_NATS_URL": on.nats_url or "",
            "HIE_NATS_CA": str(cluster.ca.cert_path),
            "HIE_DATABASE_URL": on.database_url or "",
        }
        argv = [sys.executable, "-m", "exchange.cli", "submit", str(bundle)]
        member = ["--institution", "thc-cli", "--key", str(key_pem), "--creds", str(creds)]
        sent = await asyncio.to_thread(
            subprocess.run, argv + member, env=env, capture_output=True, text=True, timeout=120
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "1 submission(s) newly accepted" in sent.stdout
        # Another member's credentials cannot send as this one.
        _, other = await add_member(on, "thc-other")
        member[member.index(str(creds))] = str(other)
        (on.data_dir / "adapter-host" / "submitted").mkdir(parents=True, exist_ok=True)
        forged = await asyncio.to_thread(
            subprocess.run,
            [*argv, *member],
            env={**env, "HIE_DATA_DIR": str(on.data_dir / "other-host")},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert forged.returncode != 0
        assert "permissions violation" in forged.stderr + forged.stdout

        # HTTPS, checked against the county CA; a client without it is refused.
        assert ex.url.startswith("https://")
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=str(cluster.ca.cert_path))
        ) as http:
            assert (await http.get(f"{ex.url}/fhir/metadata")).status_code == 200
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"{ex.url}/fhir/metadata")


async def test_a_witness_follows_the_signed_heads_and_nothing_else(
    cluster: Cluster, settings: Settings
) -> None:
    async with on_cluster(cluster, settings) as on, running(on) as ex:
        witness = on.data_dir / "witness.creds"
        authority = NatsAuthority(on.data_dir / AUTHORITY_DIR, on.consortium)
        witness.write_text(authority.witness_creds())
        errors: list[str] = []
        nc = await cluster.client(witness, inbox=inbox_prefix("witness"), errors=errors)
        try:
            heads = await nc.subscribe(f"hie.{on.consortium}.audit.head")
            # Something to sign: an audited start is already in the log; the next head comes.
            await ex.rt.audit_writer.append(
                {"action": "config.check", "decision": "permit", "reasons": [], "role": "admin"},
                datetime.now(UTC),
            )
            head = await heads.next_msg(timeout=20)
            assert on.consortium in head.data.decode()
            # The last head on request (a replica may answer: it catches up within moments).
            direct = f"$JS.API.DIRECT.GET.{stream_name(on.consortium, 'AUDIT')}."
            for _ in range(50):
                last = await nc.request(f"{direct}hie.{on.consortium}.audit.head", b"", timeout=5)
                if last.data:
                    break
                await asyncio.sleep(0.1)
            assert last.data.startswith(head.data.split(b"\n")[0])
            await nc.subscribe(f"hie.{on.consortium}.audit.alert")
            await violated(errors, "audit.alert")
            await nc.subscribe(f"hie.{on.consortium}.submit.*")
            await violated(errors, "submit.*")
        finally:
            await nc.close()
