"""A village clinic's edge node against a real hub (exchange/servers/edge.py, edge_node.py),
on loopback: the hub three nodes in the exchange's operator/JWT mode with the hub's domain and
leaf port, as `hie deploy nats-config` writes them; the edge a leaf node logged in as the
user `hie edge add` makes for it. With the hub down the clinic's submissions are acknowledged
by its edge, which is SIGKILLed half way and started again without losing one; once the hub is
back (and has updated its streams, as every start does) they reach the submit stream once
each and in order, the edge's queue empties, the clinic's receipts (not another's) come down,
and `hie edge status` says so at each step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters.nats import EDGE_RECEIPTS, EDGE_RECEIVED, EDGE_SUBMIT, edge_subject, stored_at
from exchange.private_files import write_private
from exchange.servers.edge import down_consumer, edge_creds, register_edge
from exchange.servers.edge_heal import INBOX_PREFIX, Look, Watch, stalled
from exchange.servers.edge_node import (
    EdgeNode,
    connect_local,
    edge_status,
    first_queued_at,
    running_edge,
)
from exchange.servers.embedded import free_port
from exchange.servers.nats import GATEWAY_CONSUMER, ensure_streams, stream_name
from exchange.servers.nats_accounts import NatsAuthority
from exchange.servers.nats_cluster import NatsCluster

CLINIC = "taoyuan-vc"
QUEUED = 300
STAMP = "2026-12-06T09:00:00+08:00"


def violations(log: Path) -> list[str]:
    """Permission violations a server logged (a subject a user was not allowed)."""
    return [line for line in log.read_text(errors="replace").splitlines() if "iolation" in line]


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[tuple[str, NatsCluster, EdgeNode, Path]]:
    consortium = f"e{uuid.uuid4().hex[:6]}"
    authority = NatsAuthority(tmp_path / "auth", consortium)
    hub = NatsCluster(tmp_path / "hub", size=3, authority=authority)
    service = tmp_path / "service.creds"
    write_private(service, authority.service_creds())
    (tmp_path / "clinic").mkdir()
    leaf = tmp_path / "clinic" / "leaf.creds"
    write_private(leaf, edge_creds(authority, consortium, CLINIC))
    # Kept with the clinic's users: removing the clinic revokes its edge's user too.
    assert len(authority.users()[CLINIC]) == 1
    edge = EdgeNode(tmp_path / "clinic" / "edge", consortium, CLINIC, hub.leaf_urls, leaf)
    hub.start()
    try:
        yield consortium, hub, edge, service
    finally:
        edge.stop()
        hub.stop()


async def wait_for(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_submissions_queued_at_the_edge_reach_the_hub_once_in_order(
    topology: tuple[str, NatsCluster, EdgeNode, Path],
) -> None:
    consortium, hub, edge, service = topology
    submit = stream_name(consortium, "SUBMIT")

    async def at_hub() -> Client:
        return await nats.connect(hub.url.split(","), user_credentials=str(service))

    # The exchange makes the edge known (`hie edge add`, twice: it changes nothing the second
    # time); the clinic starts its edge (`hie edge up`).
    hnc = await at_hub()
    hjs = hnc.jetstream()
    await ensure_streams(hjs, consortium, replicas=3)
    await register_edge(hjs, consortium, CLINIC)
    await register_edge(hjs, consortium, CLINIC)
    edge.start()
    await edge.prepare()
    found = running_edge(edge.folder)
    assert found is not None and found["institution"] == CLINIC
    doc: dict[str, Any] = found

    async def link(state: str) -> bool:
        return bool((await edge_status(doc))["link"] == state)

    await wait_for(lambda: link("up"))

    # The hub goes away; the clinic goes on submitting, each acknowledged by its edge, whose
    # process is SIGKILLed half way (as a power cut) and started again.
    await hnc.close()
    for node in range(3):
        hub.kill(node)
    await wait_for(lambda: link("down"))

    async def send(numbers: range) -> None:
        enc = await edge.connect()
        ejs = enc.jetstream()
        for n in numbers:
            ack = await ejs.publish(
                edge_subject(consortium, CLINIC),
                f"signed submission {n}".encode(),
                headers={"Nats-Msg-Id": f"sub-{n}", EDGE_RECEIVED: STAMP},
            )
            assert ack.stream == EDGE_SUBMIT
        await enc.close()

    await send(range(QUEUED // 2))
    edge.stop(signal.SIGKILL)
    edge.start()
    await edge.prepare()
    found = running_edge(edge.folder)
    assert found is not None
    doc = found
    await send(range(QUEUED // 2, QUEUED))
    offline = await edge_status(doc)
    assert offline["link"] == "down" and offline["queued"] == QUEUED
    assert offline["oldest_queued_s"] is not None and offline["oldest_queued_s"] >= 0
    assert offline["receipts"] == 0 and offline["last_receipt_at"] is None

    # Back: the exchange starts again (updating every stream), and the queue comes up.
    for node in range(3):
        hub.start_node(node)
    hnc = await at_hub()
    hjs = hnc.jetstream()
    await ensure_streams(hjs, consortium, replicas=3)
    sources = (await hjs.stream_info(submit)).config.sources or []
    assert [s.name for s in sources] == [EDGE_SUBMIT]

    async def all_up() -> bool:
        return (await hjs.stream_info(submit)).state.messages >= QUEUED

    await wait_for(all_up, 60)
    await asyncio.sleep(1)
    assert (await hjs.stream_info(submit)).state.messages == QUEUED  # none twice
    got: list[Msg] = []
    # Read as the gateway reads (a work queue takes one consumer per subject).
    sub = await hjs.pull_subscribe_bind(GATEWAY_CONSUMER, stream=submit)
    while len(got) < QUEUED:
        for msg in await sub.fetch(100, timeout=5):
            got.append(msg)
            await msg.ack()
    assert [(m.headers or {})["Nats-Msg-Id"] for m in got] == [f"sub-{n}" for n in range(QUEUED)]
    assert {m.subject for m in got} == {f"hie.{consortium}.submit.{CLINIC}"}
    assert all((m.headers or {})[EDGE_RECEIVED] == STAMP for m in got)

    # The exchange's receipts for the clinic come down to the edge (and another's do not).
    for n in range(3):
        await hjs.publish(f"hie.{consortium}.receipt.{CLINIC}", f"receipt {n}".encode())
    await hjs.publish(f"hie.{consortium}.receipt.dongcheng-thc", b"not the clinic's")

    async def receipts_down() -> bool:
        state = await edge_status(doc)
        return bool(state["receipts"] == 3 and state["queued"] == 0)

    await wait_for(receipts_down)
    await asyncio.sleep(1)
    settled = await edge_status(doc)
    assert settled["link"] == "up" and settled["receipts"] == 3 and settled["queued"] == 0
    assert settled["last_receipt_at"] is not None and settled["oldest_queued_s"] is None
    assert settled["clock_offset_s"] is None  # no receipt says when it was written

    # A receipt written, by the exchange's clock, an hour after the clinic's clock says it
    # came down: the clinic's clock is (at least) an hour behind.
    written = datetime.now(UTC) + timedelta(hours=1)
    receipt = {"submission_id": "sub-0", "status": "accepted", "received_at": written.isoformat()}
    await hjs.publish(f"hie.{consortium}.receipt.{CLINIC}", json.dumps(receipt).encode())

    async def measured() -> bool:
        return bool((await edge_status(doc))["receipts"] == 4)

    await wait_for(measured)
    offset = (await edge_status(doc))["clock_offset_s"]
    assert offset is not None and -3600 <= offset < -3590
    await hnc.close()
    assert all(violations(n.log) == [] for n in hub.nodes) and violations(edge.log) == []


def edge_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hie edge ARGS` as the clinic's operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", "edge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_hie_edge_up_and_status_as_a_clinic_runs_them(
    topology: tuple[str, NatsCluster, EdgeNode, Path], tmp_path: Path
) -> None:
    consortium, hub, edge, service = topology
    hnc = await nats.connect(hub.url.split(","), user_credentials=str(service))
    await ensure_streams(hnc.jetstream(), consortium, replicas=3)
    await register_edge(hnc.jetstream(), consortium, CLINIC)
    await hnc.close()
    env = {**os.environ, "HIE_DATA_DIR": str(tmp_path / "clinic"), "HIE_CONSORTIUM": consortium}
    command = [sys.executable, "-m", "exchange.cli", "edge"]
    up = subprocess.Popen(
        [
            *command,
            "up",
            "--institution",
            CLINIC,
            "--hub",
            ",".join(hub.leaf_urls),
            "--creds",
            str(edge.leaf_creds),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status: dict[str, Any] = {}
        said = ""
        deadline = time.monotonic() + 120  # each status command starts a Python: seconds
        while time.monotonic() < deadline:  # until its link to the hub is up
            done = await asyncio.to_thread(edge_command, env, "status", "--json")
            if done.returncode == 0:
                status = json.loads(done.stdout)
                if status["link"] == "up":
                    break
            said = done.stderr[-1000:]
            if up.poll() is not None:
                break  # `hie edge up` stopped: its output says why
            await asyncio.sleep(0.2)
        if status.get("link") != "up":
            up.terminate()
            out, _ = await asyncio.to_thread(up.communicate, timeout=60)
            raise AssertionError(
                f"the edge's link never came up: {status}; status said {said!r}; "
                f"`hie edge up` said {out[-2000:]!r}; its nats log ends "
                f"{(tmp_path / 'clinic' / 'edge' / 'nats.log').read_text(errors='replace')[-2000:]!r}"
            )
        assert status["institution"] == CLINIC and status["queued"] == 0
        words = await asyncio.to_thread(edge_command, env, "status")
        assert f"edge of {CLINIC}: link up; 0 submission(s) waiting" in words.stdout

        # A notification for the clinic comes down to its edge; `hie notifications` on the
        # clinic's machine reads it from there (it names no exchange to connect to), once.
        hnc = await nats.connect(hub.url.split(","), user_credentials=str(service))
        note = {"kind": "referral.accepted", "referral": "r-1"}
        await hnc.jetstream().publish(
            f"hie.{consortium}.notify.{CLINIC}", json.dumps(note).encode()
        )
        await hnc.close()

        async def came_down() -> bool:
            done = await asyncio.to_thread(edge_command, env, "status", "--json")
            return bool(done.returncode == 0 and json.loads(done.stdout)["notifications"] == 1)

        await wait_for(came_down)
        read = [sys.executable, "-m", "exchange.cli", "notifications", "--institution", CLINIC]
        first = await asyncio.to_thread(
            subprocess.run, read, env=env, capture_output=True, text=True, timeout=60
        )
        assert first.returncode == 0, first.stderr
        assert [json.loads(line) for line in first.stdout.splitlines()] == [note]
        again = await asyncio.to_thread(
            subprocess.run, read, env=env, capture_output=True, text=True, timeout=60
        )
        assert again.stdout == "" and "0 notification(s)" in again.stderr
        # A second edge from the same folder is refused.
        again = await asyncio.to_thread(
            edge_command,
            env,
            "up",
            "--institution",
            CLINIC,
            "--hub",
            hub.leaf_urls[0],
            "--creds",
            str(edge.leaf_creds),
        )
        assert again.returncode != 0 and "already runs" in again.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(up.communicate, timeout=60)
    assert up.returncode == 0, out
    assert f"edge of {CLINIC} running at nats://127.0.0.1:" in out
    assert running_edge(tmp_path / "clinic" / "edge") is None
    gone = await asyncio.to_thread(edge_command, env, "status")
    assert gone.returncode == 1 and "no edge runs" in gone.stderr


async def test_the_oldest_queued_is_found_though_the_hub_takes_the_first_meanwhile(
    tmp_path: Path,
) -> None:
    """`hie edge status` reads the queue's state, then its first message: by then the hub may
    have taken that one (the queue is a work queue), and the status must not fail for it."""
    consortium = f"e{uuid.uuid4().hex[:6]}"
    leaf = tmp_path / "leaf.creds"
    write_private(
        leaf, edge_creds(NatsAuthority(tmp_path / "auth", consortium), consortium, CLINIC)
    )
    nowhere = [f"nats-leaf://127.0.0.1:{free_port()}"]  # no hub needed: the edge works alone
    edge = EdgeNode(tmp_path / "edge", consortium, CLINIC, nowhere, leaf)
    edge.start()
    try:
        await edge.prepare()
        nc = await edge.connect()
        js, subject = nc.jetstream(), edge_subject(consortium, CLINIC)
        for n in range(3):
            await js.publish(
                subject, f"signed submission {n}".encode(), headers={"Nats-Msg-Id": f"s{n}"}
            )
        first = (await js.stream_info(EDGE_SUBMIT)).state.first_seq
        # The hub takes the first after the state was read: the next one is the oldest.
        await js.delete_msg(EDGE_SUBMIT, first)
        second = stored_at((await js.get_msg(EDGE_SUBMIT, seq=first + 1)).time)
        assert second is not None and await first_queued_at(js, first, subject) == second
        # And then all of them: nothing is queued.
        for seq in (first + 1, first + 2):
            await js.delete_msg(EDGE_SUBMIT, seq)
        assert await first_queued_at(js, first, subject) is None
        await nc.close()
    finally:
        edge.stop()


# The edge's watch over what comes down from the hub (exchange/servers/edge_heal.py): receipts
# the hub's consumer counts as delivered and acknowledged but the edge never stored -- the state
# nats-server's source reset race leaves -- are asked for again and come down, each once.


def test_stalled_only_when_the_hubs_last_stays_missing_and_nothing_comes() -> None:
    assert stalled(Look(at_hub=12, stored=11), Look(at_hub=12, stored=11))
    assert not stalled(Look(12, 11), Look(12, 12))  # it came
    assert not stalled(Look(12, 9), Look(12, 11))  # coming: more came meanwhile
    assert not stalled(Look(11, 11), Look(14, 11))  # new at the hub since: give it time
    assert not stalled(None, Look(12, 11))


async def _receipts(js: JetStreamContext) -> list[bytes]:
    state = (await js.stream_info(EDGE_RECEIPTS)).state
    return [
        (await js.get_msg(EDGE_RECEIPTS, seq)).data or b""
        for seq in range(state.first_seq, state.last_seq + 1)
        if state.messages
    ]


async def _count(js: JetStreamContext, n: int) -> bool:
    return bool((await js.stream_info(EDGE_RECEIPTS)).state.messages >= n)


async def test_receipts_that_stopped_coming_down_are_asked_for_again(
    topology: tuple[str, NatsCluster, EdgeNode, Path],
) -> None:
    consortium, hub, edge, service = topology
    hnc = await nats.connect(hub.url.split(","), user_credentials=str(service))
    hjs = hnc.jetstream()
    await ensure_streams(hjs, consortium, replicas=3)
    await register_edge(hjs, consortium, CLINIC)
    edge.start()
    await edge.prepare()
    enc = await connect_local(edge.url, edge.seed_file, INBOX_PREFIX)
    ejs = enc.jetstream()
    subject = f"hie.{consortium}.receipt.{CLINIC}"
    receipts, consumer = stream_name(consortium, "RECEIPTS"), down_consumer(CLINIC, "rcpt")
    watch = Watch(consortium, CLINIC)
    try:
        for n in range(20):
            await hjs.publish(subject, f"receipt {n}".encode())
        for n in range(5):  # another clinic's, after the clinic's last
            await hjs.publish(f"hie.{consortium}.receipt.dongcheng-thc", b"not the clinic's")
        await wait_for(lambda: _count(ejs, 20))

        # Nothing lost: two looks change nothing.
        assert await watch.look(enc) == [] and await watch.look(enc) == []

        # The race's state: 30 more receipts the hub's consumer counts as delivered and
        # acknowledged (here: set past them while the edge's source was off), none at the edge.
        config = (await ejs.stream_info(EDGE_RECEIPTS)).config
        sources, config.sources = config.sources, []
        await ejs.update_stream(config)
        for n in range(20, 50):
            last = await hjs.publish(subject, f"receipt {n}".encode())
        reset = f"$JS.API.CONSUMER.RESET.{receipts}.{consumer}"
        await hnc.request(reset, f'{{"seq": {last.seq + 1}}}'.encode(), timeout=5)
        config.sources = sources
        await ejs.update_stream(config)
        await asyncio.sleep(3)
        assert len(await _receipts(ejs)) == 20  # the 30 never come down by themselves
        info = await hjs.consumer_info(receipts, consumer)
        assert info.ack_floor.stream_seq == last.seq and info.num_pending == 0

        # The first look sees the hub's last missing; the next, that nothing came: it asks
        # again, and all 50 are at the edge, each once, in order, and no other clinic's.
        assert await watch.look(enc) == []
        assert await watch.look(enc) == [EDGE_RECEIPTS]
        await wait_for(lambda: _count(ejs, 50))
        await asyncio.sleep(2)
        assert await _receipts(ejs) == [f"receipt {n}".encode() for n in range(50)]
        assert await watch.look(enc) == [] and await watch.look(enc) == []
    finally:
        await enc.close()
        await hnc.close()
    assert all(violations(n.log) == [] for n in hub.nodes) and violations(edge.log) == []
