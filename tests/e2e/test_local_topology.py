"""`hie deploy local`'s topology as an operator and a member's adapter host use it: three NATS
nodes, a PostgreSQL primary with its synchronous standby, `hie up` with two gateways, all on
TLS. A member added with `hie institution add` sends with `hie submit --creds`, and through its
village edge node (`hie edge add`, `hie edge up`); `hie up` and its gateways are SIGKILLed (a
lost host) and started again; what the member sent through its edge meanwhile is kept there
and reported as queued, and settled by the next run once the exchange is back; `hie audit
verify` passes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from adapters.envelope import new_private_key, private_key_pem
from cryptoprofile import by_name, public_key_pem
from exchange.cli.submit_send import CATCH_UP_PATIENCE
from exchange.demo.data import demo_bundles, demo_residents
from exchange.servers.local_topology import LocalTopology
from exchange.servers.nats import connect, stream_name
from exchange.settings import PROFILE_FILE


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[LocalTopology]:
    # Under the tests' crypto profile (HIE_TEST_CRYPTO_PROFILE, else the exchange's default).
    profile = os.environ.get("HIE_TEST_CRYPTO_PROFILE")
    local = LocalTopology(tmp_path / "local", consortium="lt", gateways=2, crypto_profile=profile)
    try:
        local.start_servers()
        yield local
    finally:
        local.stop()


def hie(
    topology: LocalTopology, *args: str, env: dict[str, str] | None = None, code: int = 0
) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args],
        env={**os.environ, **topology.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout


@contextlib.contextmanager
def edge_up(topology: LocalTopology, env: dict[str, str], *args: str) -> Iterator[None]:
    """`hie edge up` on the clinic's machine, until the block ends (SIGTERM)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "edge", "up", *args],
        env={**os.environ, **topology.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "running at" in proc.stdout.readline()
        yield
    finally:
        proc.terminate()
        proc.wait(60)


async def submit_sources(topology: LocalTopology) -> list[str]:
    """The external APIs the exchange's submit stream sources from (one per edge node)."""
    env = topology.env
    nc = await connect(
        env["HIE_NATS_URL"], "test", creds=Path(env["HIE_NATS_CREDS"]), ca=Path(env["HIE_NATS_CA"])
    )
    try:
        info = await nc.jetstream().stream_info(stream_name("lt", "SUBMIT"))
        return [s.external.api for s in info.config.sources or [] if s.external]
    finally:
        await nc.close()


def test_a_member_sends_through_the_local_topology_and_survives_a_lost_exchange_host(
    topology: LocalTopology, tmp_path: Path
) -> None:
    url = topology.start_exchange("up", timeout=300)
    ca = ssl.create_default_context(cafile=topology.env["HIE_NATS_CA"])
    assert url.startswith("https://")
    assert httpx.get(f"{url}/readyz", verify=ca, timeout=10).status_code == 200

    # The member's key, of the profile the exchange recorded when it was first set up.
    profile = by_name((topology.data_dir / PROFILE_FILE).read_text().strip())
    assert profile.name == (os.environ.get("HIE_TEST_CRYPTO_PROFILE") or "intl")
    key = new_private_key(profile)
    (tmp_path / "m.pub.pem").write_bytes(public_key_pem(key))
    (tmp_path / "m.pem").write_bytes(private_key_pem(key))
    hie(
        topology,
        *("institution", "add", "thc-lt", "--name", "测试卫生院"),
        *("--level", "township_health_centre", "--public-key", str(tmp_path / "m.pub.pem")),
        *("--creds-out", str(tmp_path / "m.creds")),
    )
    # Its village edge node is made known: the submit stream sources the edge's queue, and
    # the edge's leaf credentials are written for the clinic's machine alone.
    edge = hie(topology, "edge", "add", "thc-lt", "--creds-out", str(tmp_path / "edge.creds"))
    assert str(tmp_path / "edge.creds") in edge
    assert (tmp_path / "edge.creds").stat().st_mode & 0o777 == 0o600
    assert asyncio.run(submit_sources(topology)) == ["$JS.edge-thc-lt.API"]
    bundle, later = tmp_path / "visit.json", tmp_path / "later.json"
    first, second = demo_bundles("thc-lt", demo_residents(2))
    bundle.write_text(json.dumps(first, ensure_ascii=False))
    later.write_text(json.dumps(second, ensure_ascii=False))
    # The adapter host has only its own credentials, the CA and the NATS addresses.
    member = {
        "HIE_DATA_DIR": str(tmp_path / "adapter"),
        "HIE_NATS_CREDS": "",
    }
    send = ("submit", str(bundle), "--institution", "thc-lt", "--key", str(tmp_path / "m.pem"))
    out = hie(topology, *send, "--creds", str(tmp_path / "m.creds"), env=member)
    assert "1 submission(s) newly accepted" in out

    # The clinic's edge node runs on its machine; `hie submit` there goes through it, and the
    # receipt comes back down through it.
    clinic = {"HIE_DATA_DIR": str(tmp_path / "clinic"), "HIE_NATS_CREDS": "", "HIE_NATS_URL": ""}
    hub = ",".join(topology.nats.leaf_urls) if topology.nats else ""
    residents = demo_residents(4)[2:]
    through = [tmp_path / "edge-1.json", tmp_path / "edge-2.json"]
    for path, doc in zip(through, demo_bundles("thc-lt", residents), strict=True):
        path.write_text(json.dumps(doc, ensure_ascii=False))
    clinic_send = ("submit", "--institution", "thc-lt", "--key", str(tmp_path / "m.pem"))
    edge_args = ("--institution", "thc-lt", "--hub", hub, "--creds", str(tmp_path / "edge.creds"))
    with edge_up(topology, clinic, *edge_args, "--ca", topology.env["HIE_NATS_CA"]):
        out = hie(topology, *clinic_send, str(through[0]), env=clinic)
        assert "1 submission(s) newly accepted" in out
        # The edge's queue empties once the hub's acknowledgement (flow control) reaches it.
        deadline = time.monotonic() + 30
        while (status := json.loads(hie(topology, "edge", "status", "--json", env=clinic)))[
            "queued"
        ] and time.monotonic() < deadline:
            time.sleep(0.5)
        # Every receipt of the clinic's since `hie edge add`: its direct send's too.
        assert status["queued"] == 0 and status["receipts"] == 2
        # The hub's operators see the same in /metrics.
        admin = hie(
            topology, "token", "--person", "ops-1", "--institution", "thc-lt", "--role", "admin"
        )
        scraped = httpx.get(
            f"{url}/metrics",
            headers={"Authorization": f"Bearer {admin.strip()}"},
            verify=ca,
            timeout=10,
        ).text
        assert 'hie_edge_link_up{institution="thc-lt"} 1.0' in scraped
        assert 'hie_edge_queued_messages{institution="thc-lt"} 0.0' in scraped
        assert 'hie_edge_receipts_waiting_messages{institution="thc-lt"} 0.0' in scraped

    # The exchange's host is lost: hie up and its gateways die at once.
    assert topology.exchange is not None
    up = psutil.Process(topology.exchange.pid)
    gateways = [c for c in up.children() if "gateway" in " ".join(c.cmdline())]
    assert len(gateways) == 2
    topology.kill_exchange()
    for g in gateways:
        with contextlib.suppress(psutil.NoSuchProcess):
            g.kill()
    # Meanwhile the clinic sends through its edge: kept there, reported as queued (exit 3).
    with edge_up(topology, clinic, *edge_args, "--ca", topology.env["HIE_NATS_CA"]):
        both = (str(through[0]), str(through[1]))
        queued = hie(topology, *clinic_send, *both, "--wait", "2", env=clinic, code=3)
        assert "1 queued at the clinic's edge node" in queued
        assert "edge-2.json: queued at the edge" in queued
        pending = (tmp_path / "clinic" / "submitted" / "thc-lt.pending").read_text()
        assert len(pending.splitlines()) == 1
        url = topology.start_exchange("up", timeout=300)
        # The next run (of the first file alone: the next day's export) sends nothing again;
        # it reads the receipt the edge kept for the second and tells it apart.
        settled = hie(topology, *clinic_send, both[0], "--report", "json", env=clinic)
        report = json.loads(settled)
        assert report["exit_code"] == 0
        assert [s["status"] for f in report["files"] for s in f["submissions"]] == [
            "not sent again"
        ]
        assert [(s["status"], s["items"]) for s in report["earlier_submissions"]] == [
            ("accepted", 0)
        ]
        assert (tmp_path / "clinic" / "submitted" / "thc-lt.pending").read_text() == ""
        # With nothing pending it ends once it has read what the edge holds, not after the
        # patience it gives that reading.
        began = time.monotonic()
        again = json.loads(hie(topology, *clinic_send, *both, "--report", "json", env=clinic))
        assert time.monotonic() - began < CATCH_UP_PATIENCE / 2
        assert [s["status"] for f in again["files"] for s in f["submissions"]] == [
            "not sent again",
            "not sent again",
        ]

    # The member goes on sending; what it sent before is not sent twice.
    again = hie(topology, *send, str(later), "--creds", str(tmp_path / "m.creds"), env=member)
    assert "1 submission(s) newly accepted, 1 already held" in again
    assert "audit log intact" in hie(topology, "audit", "verify")
