"""`hie up` with HIE_GATEWAY_PROCESSES: gateways as processes of their own beside it, a dead
one replaced, all of them stopped with it — and submissions flow through them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import psutil

from adapters.envelope import build_envelope, encode, new_private_key, public_key_b64
from exchange.auth.tokens import TokenIssuer
from exchange.ingest.ledger import Ledger
from exchange.servers.nats import receipt_subject, submit_subject
from exchange.settings import Settings, load_settings
from tests.factories import observation_item, resident


def gateways(up: psutil.Process) -> list[psutil.Process]:
    """The live gateway processes of `hie up` (a killed one is a zombie until reaped)."""
    found = []
    for child in up.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "gateway" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone between listing and looking
            pass
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(what: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(0.1)
    raise AssertionError("not within the time allowed")


async def test_gateway_processes_are_supervised_and_carry_the_submissions(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url and settings.nats_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIE_")}
    env |= {
        "HIE_DATA_DIR": str(tmp_path / "data"),
        "HIE_DATABASE_URL": settings.database_url,
        "HIE_NATS_URL": settings.nats_url,
        "HIE_CONSORTIUM": settings.consortium,
        "HIE_CRYPTO_PROFILE": settings.crypto_profile,
        "HIE_HTTP_PORT": "0",
        "HIE_GATEWAY_PROCESSES": "2",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout
        seen = ""
        while "gateway process(es) started" not in seen:
            line = proc.stdout.readline()
            assert line, "hie up ended early:\n" + seen
            seen += line
        up = psutil.Process(proc.pid)
        # Two gateways beside `hie up`; one killed without warning is replaced.
        first = wait_for(lambda: (g := gateways(up)) and len(g) == 2 and g)
        first[0].send_signal(signal.SIGKILL)
        replaced = wait_for(
            lambda: (
                (g := gateways(up)) and len(g) == 2 and first[0].pid not in {p.pid for p in g} and g
            )
        )

        # An institution submits through NATS: every submission is accepted, by the gateways
        # (the `hie up` process runs none of its own).
        own = load_settings(env)
        key = new_private_key(own.profile)
        ledger = await asyncio.to_thread(
            Ledger,
            settings.database_url,
            own.secrets.ledger_cipher_key,
            own.secrets.pseudonym_key,
            crypto_profile=own.crypto_profile,
        )
        await asyncio.to_thread(
            ledger.register_institution,
            "thc-g",
            "测试卫生院",
            "township_health_centre",
            public_key_b64(key),
        )
        ledger.close()
        nc = await nats.connect(settings.nats_url)
        sub = await nc.subscribe(receipt_subject(settings.consortium, "thc-g"))
        envelopes = [
            build_envelope(
                institution="thc-g",
                key=key,
                sent_at=datetime.now(UTC),
                items=[observation_item(resident(n), f"g{n}")],
            )
            for n in range(10)
        ]
        js = nc.jetstream()
        for env_doc in envelopes:
            await js.publish(
                submit_subject(settings.consortium, "thc-g"),
                encode(env_doc),
                headers={"Nats-Msg-Id": env_doc["submission_id"]},
            )
        receipts = [json.loads((await sub.next_msg(timeout=30)).data) for _ in envelopes]
        await nc.close()
        assert sorted(r["submission_id"] for r in receipts) == sorted(
            e["submission_id"] for e in envelopes
        )
        assert {r["status"] for r in receipts} == {"accepted"}
        # `hie up`'s /metrics counts what its gateway processes did (they report through
        # the data directory; it runs no gateway of its own).
        http_url = json.loads((tmp_path / "data" / "run.json").read_text())["http_url"]
        admin, _ = TokenIssuer(own.secrets.token_key, own.profile).issue(
            person="ops", institution="exchange", role="admin", now=datetime.now(UTC)
        )
        async with httpx.AsyncClient(base_url=http_url) as http:
            scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert scraped.status_code == 200, scraped.text
        accepted = 'hie_submissions_total{institution="thc-g",outcome="accepted"} 10.0'
        assert accepted in scraped.text.splitlines()
        assert "hie_ledger_append_duration_seconds_count" in scraped.text
        # Each start is in the audit log with what it runs: `hie up` no gateway of its own,
        # and the two live gateway processes each theirs (the killed one may not have got
        # that far).
        conn = await asyncpg.connect(settings.database_url)
        deadline = time.monotonic() + 60
        while True:
            starts = [
                json.loads(r["record_text"])["settings"]
                for r in await conn.fetch(
                    "SELECT record_text FROM audit_log WHERE action = 'config.start' ORDER BY seq"
                )
            ]
            runs = [(start["http"], start["gateway"]) for start in starts]
            if runs.count((False, True)) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await conn.close()
        assert runs.count((True, False)) == 1 and runs.count((False, True)) >= 2, runs
        assert [s["gateway_processes"] for s in starts if s["http"]] == [2]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    # Ctrl-C stops `hie up` and, with it, every gateway it started.
    assert code == 0
    assert not [p for p in replaced if alive(p)]
