"""`hie audit verify` against a tampered log: a changed byte, a deleted row, a reordered row
and a truncated log are each caught, and the first bad record is named. Every test runs under
both crypto profiles: intl (SHA-256 tree, Ed25519 heads) and gm (SM3 tree, SM2 heads)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from exchange.bootstrap import Endpoints, Runtime, open_runtime
from exchange.servers.audit_heads import verify_log
from exchange.settings import Settings
from tests.integration.conftest import PROFILES, Running

pytestmark = pytest.mark.parametrize("crypto_profile", PROFILES)
T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
SPLIT = {"workers": 3, "chunk": 16}  # worker processes even for a log of 260 records
OTHER_HASH = {"sha256": "sm3", "sm3": "sha256"}  # the other profile's hash


def verify_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HIE_DATA_DIR": str(settings.data_dir),
        "HIE_CONSORTIUM": settings.consortium,
        "HIE_CRYPTO_PROFILE": settings.crypto_profile,
        "HIE_DATABASE_URL": settings.database_url or "",
        "HIE_NATS_URL": settings.nats_url or "",
        "HIE_LEDGER_CIPHER_KEY": settings.secrets.ledger_cipher_key,
        "HIE_PSEUDONYM_KEY": base64.b64encode(settings.secrets.pseudonym_key).decode(),
        "HIE_TOKEN_KEY": base64.b64encode(settings.secrets.token_key).decode(),
        "HIE_AUDIT_KEY": base64.b64encode(settings.secrets.audit_key).decode(),
    }
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", "audit", "verify"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )


async def fill(rt: Runtime) -> None:
    """260 reads audited; heads signed at sizes 200 and 250."""
    signer = rt.head_signer()

    async def reads(start: int, count: int) -> None:
        await asyncio.gather(
            *(
                rt.audit_writer.append(
                    {
                        "action": "read",
                        "decision": "permit" if n % 3 else "deny",
                        "person": f"doctor-{n % 7}",
                        "institution": "county",
                        "purpose": "TREAT",
                        "reasons": [],
                    },
                    T0 + timedelta(seconds=n),
                )
                for n in range(start, start + count)
            )
        )

    await reads(0, 200)
    assert await rt.audit_writer.store.record_head(signer.note, T0) is not None
    await reads(200, 50)
    assert await rt.audit_writer.store.record_head(signer.note, T0) is not None
    await reads(250, 10)


TAMPERING = {
    "changed byte": (
        "UPDATE audit_log SET record_text = replace(record_text, 'doctor-', "
        "'doctoR-') WHERE seq = 57",
        57,
        "audit.record_changed",
    ),
    "deleted row": ("DELETE FROM audit_log WHERE seq = 120", 120, "audit.record_missing"),
    "reordered rows": (
        "UPDATE audit_log a SET record_text = b.record_text, leaf_hash = b.leaf_hash,"
        " chain_hash = b.chain_hash FROM audit_log b WHERE (a.seq, b.seq) IN "
        "((80, 81), (81, 80))",
        80,
        "audit.record_moved",
    ),
    "truncated below a signed head": (
        "DELETE FROM audit_log WHERE seq >= 230",
        230,
        "audit.truncated",
    ),
    "truncated after the last head": (
        "DELETE FROM audit_log WHERE seq >= 255",
        255,
        "audit.truncated",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
async def test_verify_names_the_first_bad_record(settings: Settings, case: str) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        await fill(rt)
        # The log is made with the profile's hash, and its heads name it.
        assert await rt.pool.fetchval("SELECT hash FROM audit_tree") == settings.profile.hash_name
        note = (await rt.audit_writer.store.last_head())["note"]
        assert note.startswith(
            f"county-hie/{settings.consortium}/audit"
            + ("/sm3\n" if settings.crypto_profile == "gm" else "\n")
        )
        # Intact, the log verifies against both signed heads.
        intact = await asyncio.to_thread(verify_cli, settings)
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert "260 records, 2 signed head(s) match" in intact.stdout
        side_by_side = await verify_log(rt.pool, rt.head_signer(), settings.database_url, **SPLIT)
        assert (side_by_side.ok, side_by_side.records, side_by_side.heads_checked) == (True, 260, 2)
        # The application's own role cannot change the log: it may only read it ...
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await rt.pool.execute("DELETE FROM audit_log WHERE seq = 1")
        # ... the owner's triggers refuse it too ...
        conn = await asyncpg.connect(settings.database_url)
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM audit_log WHERE seq = 1")
            # ... so an operator with the owner's credentials goes around them.
            statement, seq, code = TAMPERING[case]
            await conn.execute("SET session_replication_role = replica")
            await conn.execute(statement)
        finally:
            await conn.close()
    result = await asyncio.to_thread(verify_cli, settings)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[{code}]" in result.stdout
    assert f"first bad record: {seq}" in result.stdout
    # Read and hashed by three worker processes, in chunks of 16: the same first bad record.
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        report = await verify_log(rt.pool, rt.head_signer(), settings.database_url, **SPLIT)
    assert (report.findings[0].code, report.findings[0].seq) == (code, seq)


async def test_verify_proves_the_ledger_against_its_anchors(exchange: Running) -> None:
    from tests.factories import record_items, resident
    from tests.integration.test_walking_skeleton import submit

    # Three accepted submissions: each one's content hash is anchored in the audit log.
    await exchange.register("thc-x")
    receipts = [
        await submit(exchange, "thc-x", record_items(resident(n), f"x{n}")) for n in range(3)
    ]
    a, b, c = (r["positions"][0] for r in receipts)
    settings = exchange.rt.settings
    # Each anchor is the envelope's digest with the log's hash, in the field naming it:
    # envelope_sha256 under intl, envelope_sm3 under gm, never the other.
    hash_name, other = settings.profile.hash_name, OTHER_HASH[settings.profile.hash_name]
    envelopes = {
        pos: event.envelope
        for pos, event in await exchange.rt.sync(exchange.rt.ledger.read, 0, 1000)
        if pos in (a, b, c)
    }
    # The gateway commits a submission's audit record while it sends the receipt (together,
    # then the ack): the last receipt may arrive just before its record is committed.
    async with asyncio.timeout(10):
        while True:
            rows = await exchange.rt.pool.fetch(
                "SELECT record_text FROM audit_log WHERE action = 'submission'"
            )
            if len(rows) >= 3:
                break
            await asyncio.sleep(0.05)
    anchors = [json.loads(r["record_text"]) for r in rows]
    assert {r["position"]: r[f"envelope_{hash_name}"] for r in anchors} == {
        pos: hashlib.new(hash_name, envelope.encode()).hexdigest()
        for pos, envelope in envelopes.items()
    }
    assert not any(f"envelope_{other}" in r for r in anchors)
    intact = await asyncio.to_thread(verify_cli, settings)
    assert intact.returncode == 0, intact.stdout + intact.stderr

    # An anchor in the other profile's field (appended as the log appends, so the log holds
    # together): checked with the hash it names, and reported.
    await exchange.rt.audit_writer.append(
        {
            "action": "submission",
            "decision": "accepted",
            "institution": "thc-x",
            "position": a,
            "repeat": False,
            f"envelope_{other}": hashlib.new(other, envelopes[a].encode()).hexdigest(),
        },
        datetime.now(UTC),
    )
    foreign = await asyncio.to_thread(verify_cli, settings)
    assert foreign.returncode == 1
    assert f"ledger position {a} carries envelope_{other}" in foreign.stdout
    assert "[audit.digest_hash]" in foreign.stdout and "ledger.event_changed" not in foreign.stdout

    async with exchange.owner() as conn:
        await conn.execute("SET session_replication_role = replica")
        # One clinical event is swapped for another's (still decrypts), one is removed.
        await conn.execute(
            "UPDATE ledger_events SET state = (SELECT state FROM ledger_events "
            "WHERE notification_id = $1) WHERE notification_id = $2",
            a,
            b,
        )
        await conn.execute("DELETE FROM ledger_events WHERE notification_id = $1", c)
    result = await asyncio.to_thread(verify_cli, settings)
    assert result.returncode == 1
    assert f"position {b} differs from the content anchored" in result.stdout
    assert f"position {c} is no longer in the ledger [ledger.event_missing]" in result.stdout


async def test_a_submission_whose_first_answer_was_lost_is_anchored_by_its_repeat(
    exchange: Running,
) -> None:
    """A failover can confirm a ledger commit to nobody: the standby has it, the gateway saw
    its connection drop and gave the submission back. Redelivered, it is answered as a repeat,
    and that answer anchors it; a repeat naming other content anchors nothing."""
    from adapters.envelope import build_envelope, encode
    from adapters.nats import SubmitClient
    from domain.submission import validate_envelope
    from exchange.ingest.ledger import Pending
    from tests.factories import record_items, resident

    key = await exchange.register("thc-lost")
    envelope = build_envelope(
        institution="thc-lost",
        key=key,
        sent_at=datetime.now(UTC),
        items=record_items(resident(7), "lost"),
    )
    valid, problems = validate_envelope(envelope)
    assert valid and not problems
    # Committed, never answered: no audit record of it yet.
    # (the bytes the gateway would have kept: those it received)
    await exchange.rt.sync(
        exchange.rt.ledger.append, [Pending(valid, encode(envelope).decode(), datetime.now(UTC))]
    )
    settings = exchange.rt.settings
    unanswered = await asyncio.to_thread(verify_cli, settings)
    assert unanswered.returncode == 1 and "[ledger.not_anchored]" in unanswered.stdout
    # The sender's resend is answered as a repeat (as the redelivery would be), anchored.
    client = SubmitClient(exchange.rt.nc, settings.consortium, "thc-lost")
    receipt = (await client.submit([envelope], wait=20))[envelope["submission_id"]]
    assert receipt["status"] == "accepted" and receipt["repeat"]
    answered = await asyncio.to_thread(verify_cli, settings)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    # Its content swapped in the ledger afterwards: the repeat's hash no longer names it.
    other = await exchange.rt.sync(exchange.rt.ledger.max_position)
    async with exchange.owner() as conn:
        await conn.execute("SET session_replication_role = replica")
        first = await conn.fetchval(
            "SELECT min(notification_id) FROM ledger_events WHERE notification_id < $1 "
            "AND topic LIKE '%Submission.Accepted%'",
            other,
        )
        if first is not None:
            await conn.execute(
                "UPDATE ledger_events SET state = (SELECT state FROM ledger_events "
                "WHERE notification_id = $1) WHERE notification_id = $2",
                first,
                receipt["positions"][0],
            )
    if first is not None:
        swapped = await asyncio.to_thread(verify_cli, settings)
        assert swapped.returncode == 1


async def test_the_exchange_never_signs_a_head_that_does_not_extend_the_last(
    settings: Settings,
) -> None:
    from audit.postgres import AuditIntegrityError

    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        await fill(rt)  # heads at 200 and 250
        # Someone rewrites an old leaf and every node above it, so the tree "looks" whole ...
        conn = await asyncpg.connect(settings.database_url)  # the owner's credentials
        try:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("UPDATE audit_nodes SET hash = sha256(hash) WHERE idx = 0")
        finally:
            await conn.close()
        await rt.audit_writer.append({"action": "read", "decision": "permit", "reasons": []}, T0)
        # ... but it no longer extends the signed head, so no new head is signed.
        with pytest.raises(AuditIntegrityError):
            await rt.audit_writer.store.record_head(rt.head_signer().note, T0)
        assert (await rt.audit_writer.store.last_head())["size"] == 250


async def test_two_writers_with_flushes_in_flight_keep_one_log(settings: Settings) -> None:
    """Two appenders (as two processes would be), each sending its next flush before the one
    before has committed: every record gets its own place and the log verifies."""
    from audit.postgres import AuditStore
    from audit.writer import AuditWriter

    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        start = (await rt.audit_writer.store.tree()).size
        other = AuditWriter(AuditStore(rt.pool))
        try:
            seqs = await asyncio.gather(
                *(
                    (rt.audit_writer if n % 2 else other).append(
                        {"action": "read", "decision": "permit", "person": f"doctor-{n % 5}"},
                        T0 + timedelta(seconds=n),
                    )
                    for n in range(600)
                )
            )
        finally:
            await other.close()
        assert sorted(seqs) == list(range(start, start + 600))
        report = await verify_log(rt.pool, rt.head_signer(), settings.database_url, **SPLIT)
        assert report.ok and report.records == start + 600


class HeldAppends:
    """One process's connection to the database: its appends wait until each is let go (in
    the order they were sent, or another), and each one's answer is kept."""

    def __init__(self, pool: object) -> None:
        self.pool = pool
        self.sent: list[asyncio.Event] = []
        self.answers: list[tuple[int, bool]] = []

    async def fetchval(self, sql: str, *args: object) -> object:
        if not sql.startswith("SELECT audit_append"):
            return await self.pool.fetchval(sql, *args)  # type: ignore[attr-defined]
        n = len(self.sent)
        self.sent.append(go := asyncio.Event())
        await go.wait()
        value = await self.pool.fetchval(sql, *args)  # type: ignore[attr-defined]
        self.answers.append((n, bool(value)))
        return value

    async def until_sent(self, count: int) -> None:
        while len(self.sent) < count:
            await asyncio.sleep(0.01)

    def __getattr__(self, name: str) -> object:
        return getattr(self.pool, name)


def _records(first: int, n: int) -> list[tuple[dict[str, str], datetime]]:
    return [
        ({"action": "read", "decision": "permit", "person": f"doctor-{i}"}, T0)
        for i in range(first, first + n)
    ]


async def test_an_append_sent_on_one_that_is_then_refused_is_refused_too(
    settings: Settings,
) -> None:
    """One process sends its next append, computed on the one still on its way, at once; then
    another process appends exactly as many records as the first: the first is refused (the
    tree moved), and so is the one built on it (its size is right, its chain link is not), and
    both are computed again on the tree as committed. Nothing is lost, the log verifies."""
    from audit.postgres import AuditStore

    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        start = (await rt.audit_writer.store.tree()).size
        held = HeldAppends(rt.pool)
        one, other = AuditStore(held), AuditStore(rt.pool)  # type: ignore[arg-type]
        a = asyncio.create_task(one.append_many(_records(0, 3)))
        b = asyncio.create_task(one.append_many(_records(10, 2)))
        await held.until_sent(2)  # b went without waiting for a to land
        await other.append_many(_records(20, 3))  # another process: as many records as a
        held.sent[0].set()
        while not held.answers:
            await asyncio.sleep(0.01)
        held.sent[1].set()
        while not (a.done() and b.done()):  # both computed again: let every one go
            for go in held.sent:
                go.set()
            await asyncio.sleep(0.01)
        seqs = [*await a, *await b]
        assert sorted(seqs) == list(range(start + 3, start + 8))
        assert held.answers[:2] == [(0, False), (1, False)]  # a, then b built on it
        assert len(held.answers) == 4
        report = await verify_log(rt.pool, rt.head_signer(), settings.database_url, **SPLIT)
        assert report.ok and report.records == start + 8


async def test_an_append_that_reaches_the_database_before_the_one_it_builds_on_is_sent_again(
    settings: Settings,
) -> None:
    """The second of two appends sent at once reaches the database first: it is refused (the
    tree is not yet as it expects), and once the first has landed it is sent again as it was,
    not computed again, and lands after it. The log verifies."""
    from audit.postgres import AuditStore

    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        start = (await rt.audit_writer.store.tree()).size
        held = HeldAppends(rt.pool)
        store = AuditStore(held)  # type: ignore[arg-type]
        a = asyncio.create_task(store.append_many(_records(0, 3)))
        b = asyncio.create_task(store.append_many(_records(10, 2)))
        await held.until_sent(2)
        held.sent[1].set()  # b first
        while not held.answers:
            await asyncio.sleep(0.01)
        held.sent[0].set()
        await held.until_sent(3)
        held.sent[2].set()
        assert await a == [start, start + 1, start + 2]
        assert await b == [start + 3, start + 4]
        assert held.answers == [(1, False), (0, True), (2, True)]
        report = await verify_log(rt.pool, rt.head_signer(), settings.database_url, **SPLIT)
        assert report.ok and report.records == start + 5


async def test_the_database_refuses_an_append_that_does_not_extend_the_chain_head(
    settings: Settings,
) -> None:
    """A writer whose idea of the tree has the right size but another chain head (computed on
    an append that never landed) is refused by the database itself, writes nothing, reads the
    tree again and lands on the chain as it stands: the log verifies."""
    from audit.postgres import AuditStore

    calls: list[bool] = []

    class Counted:
        def __init__(self, pool: object) -> None:
            self.pool = pool

        async def fetchval(self, sql: str, *args: object) -> object:
            value = await self.pool.fetchval(sql, *args)  # type: ignore[attr-defined]
            if sql.startswith("SELECT audit_append"):
                calls.append(bool(value))
            return value

        def __getattr__(self, name: str) -> object:
            return getattr(self.pool, name)

    record = {"action": "read", "decision": "permit", "person": "doctor-chain"}
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        store = AuditStore(Counted(rt.pool))  # type: ignore[arg-type]
        await store.append(record, T0)
        assert store._state is not None
        # The right size, a chain head that never was.
        store._state = (store._state[0], bytes(32), store._state[2])
        seq = await store.append(record, T0)
        assert calls == [True, False, True]  # refused once, then computed again and written
        assert (await rt.audit_writer.store.tree()).size == seq + 1
        report = await verify_log(rt.pool, rt.head_signer(), settings.database_url)
        assert report.ok and report.records == seq + 1
