"""Kill the gateway mid-stream and start it again: every accepted submission is in the ledger
exactly once, and every submission gets its receipt."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
from nats.js.api import DeliverPolicy

from adapters.envelope import build_envelope, encode
from domain.submission import Submission
from exchange.bootstrap import Endpoints, open_runtime
from exchange.servers.nats import stream_name
from exchange.settings import Settings
from tests.factories import encounter_item, observation_item, resident
from tests.integration.conftest import registered_sender

N = 1500


def gateway_process(settings: Settings) -> subprocess.Popen[bytes]:
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
    return subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def accepted_receipts(js: Any, consortium: str, ids: set[str], within: float) -> set[str]:
    stream = stream_name(consortium, "RECEIPTS")
    sub = await js.subscribe(
        f"hie.{consortium}.receipt.*",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        stream=stream,
    )
    answered: set[str] = set()
    deadline = time.monotonic() + within
    try:
        while answered != ids and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                continue
            receipt = json.loads(msg.data)
            if receipt["status"] == "accepted":
                answered.add(receipt["submission_id"])
    finally:
        await sub.unsubscribe()
    return answered


def held(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT submission) FROM ledger_source_records"
        ).fetchone()
        return int(row[0]) if row else 0


async def test_gateway_killed_mid_stream_loses_and_doubles_nothing(settings: Settings) -> None:
    assert settings.database_url
    endpoints = Endpoints(settings.database_url, settings.nats_url or "")
    async with open_runtime(settings, endpoints) as rt:
        key = await registered_sender(rt, "thc-k")
        # A backlog of submissions waits in JetStream before any gateway runs.
        js = rt.nc.jetstream()
        ids = []
        for n in range(N):
            rid = resident(n)
            env = build_envelope(
                institution="thc-k",
                key=key,
                sent_at=datetime.now(UTC),
                items=[
                    encounter_item(rid, f"enc-{n}"),
                    observation_item(rid, f"obs-{n}", str(100 + n % 90)),
                ],
            )
            ids.append(env["submission_id"])
            await js.publish(
                f"hie.{settings.consortium}.submit.thc-k",
                encode(env),
                headers={"Nats-Msg-Id": env["submission_id"]},
            )

        # The gateway starts, gets part-way, and is killed without warning.
        first = gateway_process(settings)
        deadline = time.monotonic() + 60
        while held(settings.database_url) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill = held(settings.database_url)
        assert 0 < at_kill < N, f"the kill should land mid-stream (held {at_kill} of {N})"

        # Started again, it finishes the backlog, and every sender gets an accepted receipt —
        # also for the batch the first one committed but could not acknowledge.
        second = gateway_process(settings)
        try:
            answered = await accepted_receipts(js, settings.consortium, set(ids), within=90)
            # The batch the killed gateway held comes back once its ack wait (10 s) is over;
            # the second gateway answers it as repeats, and the stream empties.
            submit = stream_name(settings.consortium, "SUBMIT")
            deadline = time.monotonic() + 60
            while (await js.stream_info(submit)).state.messages and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            second.send_signal(signal.SIGINT)
            _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err.decode(errors="replace")[-2000:]
        assert answered == set(ids)

        # Every submission is in the ledger exactly once, with all its items.
        events = await rt.sync(rt.ledger.read, 0, 10 * N)
        accepted = Counter(e.submission_id for _, e in events if isinstance(e, Submission.Accepted))
        assert set(accepted) == set(ids)
        assert max(accepted.values()) == 1
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM ledger_source_records").fetchone() == (2 * N,)
        # And nothing is left waiting in the submit stream.
        assert (
            await js.stream_info(stream_name(settings.consortium, "SUBMIT"))
        ).state.messages == 0
