"""The exchange on a PostgreSQL primary with a synchronous standby, over TLS (verify-full): the
primary is killed mid-stream and the standby promoted, and a running `hie up` with a gateway
process carries on by itself. Every submission gets its receipt, each accepted one is in the
ledger exactly once, the read models equal a rebuild and the audit log verifies. A client that
cannot check the server's certificate, or reaches it by another name, is refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import nats
import psycopg
import pytest

from adapters.envelope import build_envelope, encode, new_private_key, public_key_b64
from domain.submission import submission_key
from exchange.errors import EmbeddedServerError
from exchange.ingest.ledger import Ledger
from exchange.servers.certs import CountyCA
from exchange.servers.nats import submit_subject
from exchange.servers.replication import ReplicatedPostgres
from exchange.settings import load_settings
from projections.postgres import NAME, TABLES
from tests.factories import observation_item, resident

INSTITUTIONS = ("thc-fa", "thc-fb", "vc-fc")
PER_INSTITUTION = 60


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[ReplicatedPostgres]:
    try:
        cluster = ReplicatedPostgres(tmp_path / "pg")
    except EmbeddedServerError as exc:  # no PostgreSQL build with TLS: fail, saying so
        pytest.fail(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_only_clients_that_check_the_servers_certificate_get_in(
    pair: ReplicatedPostgres, tmp_path: Path
) -> None:
    # With the county's CA and the name in the certificate: in, encrypted.
    with psycopg.connect(pair.url) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
        # The standby streams over TLS too.
        row = conn.execute(
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
        ).fetchone()
        assert row == (True,)
    # Without TLS: no pg_hba.conf line lets it in.
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(pair.node_dsn(pair.primary, dbname="hie", sslmode="disable"))
    # Trusting another CA: the server's certificate does not verify.
    other = CountyCA(tmp_path / "other-ca", "elsewhere")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(pair.node_dsn(pair.primary, dbname="hie", sslrootcert=str(other.cert_path)))
    # The right CA, but the server reached as another name than its certificate's.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(
            pair.node_dsn(pair.primary, dbname="hie", host="db.elsewhere.example")
            + " hostaddr=127.0.0.1"
        )

    # asyncpg (the exchange's pools) checks the same way.
    async def asyncpg_with_other_ca() -> None:
        url = pair.url.replace(
            str(pair.ca_cert).replace("/", "%2F"), str(other.cert_path).replace("/", "%2F")
        )
        assert url != pair.url
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncpg.connect(url)

    asyncio.run(asyncpg_with_other_ca())


def test_without_its_standby_the_primary_waits_until_an_operator_decides(
    pair: ReplicatedPostgres,
) -> None:
    with psycopg.connect(pair.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE waits (n int)")
    pair.standby.stop()

    def commit() -> None:
        with psycopg.connect(pair.url, autocommit=True) as conn:
            conn.execute("INSERT INTO waits VALUES (1)")

    with ThreadPoolExecutor(1) as threads:
        # The standby is away: a commit waits for it, neither refused nor made asynchronous.
        waiting = threads.submit(commit)
        time.sleep(2)
        assert not waiting.done()
        # The operator decides to run on the primary alone: the commit returns.
        pair.run_alone()
        waiting.result(timeout=10)
    # Synchronous again, and the standby back: nothing was lost on the way.
    pair.resume_synchronous()
    pair.rejoin()
    with psycopg.connect(pair.url, autocommit=True) as conn:
        conn.execute("INSERT INTO waits VALUES (2)")
        assert conn.execute("SELECT count(*) FROM waits").fetchone() == (2,)


def hie(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def read_models(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            table: sorted(
                json.dumps(dict(r), default=str, sort_keys=True)
                for r in await conn.fetch(f"SELECT * FROM {table}")
            )
            for table in TABLES
        }
    finally:
        await conn.close()


async def settled(url: str, within: float = 30) -> None:
    """Until the projection has applied the whole ledger."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            head = await conn.fetchval(
                "SELECT coalesce(max(notification_id), 0) FROM ledger_events"
            )
            at = await conn.fetchval(
                "SELECT position FROM projection_position WHERE name = $1", NAME
            )
            if at == head:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the projection is at {at}, the ledger at {head}")
    finally:
        await conn.close()


async def test_the_exchange_survives_the_primarys_loss(
    pair: ReplicatedPostgres, servers: tuple[str, str], tmp_path: Path, crypto_profile: str
) -> None:
    consortium = f"t{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIE_")}
    env |= {
        "HIE_DATA_DIR": str(tmp_path / "data"),
        "HIE_DATABASE_URL": pair.url,
        "HIE_NATS_URL": servers[1],
        "HIE_CONSORTIUM": consortium,
        "HIE_CRYPTO_PROFILE": crypto_profile,
        "HIE_HTTP_PORT": "0",
        "HIE_GATEWAY_PROCESSES": "1",
        "PYTHONUNBUFFERED": "1",
    }
    # `hie up` on the pair's multi-host URL, its gateway a process of its own (its output to
    # a file: the outage's tracebacks would fill a pipe that nobody reads).
    said = tmp_path / "up.log"
    with open(said, "w") as out:  # noqa: ASYNC230 - before anything runs
        up = subprocess.Popen(
            [sys.executable, "-m", "exchange.cli", "up"],
            env=env,
            text=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    nc = None
    try:
        deadline = time.monotonic() + 60
        while "gateway process(es) started" not in said.read_text():
            assert up.poll() is None and time.monotonic() < deadline, said.read_text()
            await asyncio.sleep(0.1)
        own = load_settings(env)
        ledger = await asyncio.to_thread(
            Ledger,
            pair.url,
            own.secrets.ledger_cipher_key,
            own.secrets.pseudonym_key,
            crypto_profile=own.crypto_profile,
        )
        keys = {code: new_private_key(own.profile) for code in INSTITUTIONS}
        for code, key in keys.items():
            await asyncio.to_thread(
                ledger.register_institution,
                code,
                "测试卫生院",
                "township_health_centre",
                public_key_b64(key),
            )
        ledger.close()

        # Three institutions submit at once; every receipt is collected as it comes.
        nc = await nats.connect(servers[1])
        receipts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        arrived: list[tuple[float, dict[str, Any]]] = []

        async def on_receipt(msg: Any) -> None:
            doc = json.loads(msg.data)
            receipts[doc["submission_id"]].append(doc)
            arrived.append((time.monotonic(), doc))

        await nc.subscribe(f"hie.{consortium}.receipt.*", cb=on_receipt)
        sent: dict[str, str] = {}  # submission id -> institution
        published: dict[str, float] = {}  # submission id -> when
        js = nc.jetstream()

        async def submit(code: str) -> None:
            for n in range(PER_INSTITUTION):
                doc = build_envelope(
                    institution=code,
                    key=keys[code],
                    sent_at=datetime.now(UTC),
                    items=[observation_item(resident(n), f"{code}-{n}")],
                )
                sent[doc["submission_id"]] = code
                await js.publish(
                    submit_subject(consortium, code),
                    encode(doc),
                    headers={"Nats-Msg-Id": doc["submission_id"]},
                )
                published[doc["submission_id"]] = time.monotonic()
                await asyncio.sleep(0.05)

        senders = [asyncio.create_task(submit(code)) for code in INSTITUTIONS]

        # Mid-stream, the primary is lost; the standby is promoted and the old primary,
        # rewound, follows it (until then the new primary's commits wait for a standby).
        # Twice: the second time the first node is the primary again.
        rounds = []
        for share in (4, 2):
            while len(arrived) < len(INSTITUTIONS) * PER_INSTITUTION // share:
                await asyncio.sleep(0.05)
            killed = time.monotonic()
            await asyncio.to_thread(pair.kill_primary)
            await asyncio.to_thread(pair.promote)
            promoted = time.monotonic()
            await asyncio.to_thread(pair.rejoin)
            rounds.append((killed, promoted, time.monotonic()))
        await asyncio.gather(*senders)
        assert pair.primary.name == "node_a"  # back where it started
        # Submissions kept coming while the database was away.
        killed, _, rejoined = rounds[0]
        assert [sid for sid, at in published.items() if killed < at < rejoined]

        # Every sender gets a receipt for each submission, in-flight ones included.
        deadline = time.monotonic() + 45
        while set(receipts) != set(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert set(receipts) == set(sent), f"{len(set(sent) - set(receipts))} without receipt"
        assert {r["status"] for rs in receipts.values() for r in rs} == {"accepted"}
        for killed, promoted, rejoined in rounds:
            # The first receipt of a submission sent after the kill: the new primary's commit
            # (on a busy machine the senders may have finished before a later round).
            after = [t for t, d in arrived if published[d["submission_id"]] > killed]
            if not after:
                continue
            again = min(after)
            print(
                f"\nfailover: promoted {promoted - killed:.2f} s after the kill, old primary "
                f"following {rejoined - killed:.2f} s after it; the exchange accepted again "
                f"{again - killed:.2f} s after the kill ({again - rejoined:.2f} s after the rejoin)"
            )

        # Exactly once: one position per submission, whatever its receipts; that position
        # holds that submission; the ledger holds no other.
        positions = {sid: {r["positions"][0] for r in rs} for sid, rs in receipts.items()}
        assert all(len(p) == 1 for p in positions.values())
        assert len({p for ps in positions.values() for p in ps}) == len(sent)
        conn = await asyncpg.connect(pair.url)
        try:
            held = dict(
                await conn.fetch(
                    "SELECT notification_id, originator_id FROM ledger_events "
                    "WHERE originator_version = 1 AND originator_id = ANY($1)",
                    [submission_key(code, sid) for sid, code in sent.items()],
                )
            )
            sources = await conn.fetchval("SELECT count(*) FROM ledger_source_records")
        finally:
            await conn.close()
        assert held == {
            next(iter(positions[sid])): submission_key(code, sid) for sid, code in sent.items()
        }
        assert sources == len(sent)  # one item each, each source record once

        # The read models equal a rebuild from the ledger.
        await settled(pair.url)
        followed = await read_models(pair.url)
        rebuilt = hie(env, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        await settled(pair.url)
        assert await read_models(pair.url) == followed
        assert len(followed["record_entries"]) == len(sent)

        # The audit log verifies: its tree, its signed heads, every submission's anchor.
        verified = hie(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert up.poll() is None  # `hie up` rode it out
    finally:
        if nc is not None:
            await nc.close()
        up.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(up.wait, 60)
    assert code == 0, said.read_text()[-3000:]
