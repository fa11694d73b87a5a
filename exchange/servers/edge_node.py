"""A village clinic's edge node as a process on the clinic's machine (`hie edge up`): its
folder, its nats-server, its streams, and what `hie edge status` reports.

The folder (``<data dir>/edge`` by default) holds the server's configuration, its JetStream
store, the nkey seed of the clinic's own client (0600: a sender on the same machine logs in
with it) and ``edge.json``, which says where the running edge listens: `hie submit` on the
same machine finds the edge there and sends through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import nkeys
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from adapters.nats import (
    EDGE_NOTIFY,
    EDGE_RECEIPTS,
    EDGE_SUBMIT,
    edge_clock_offset,
    edge_subject,
    stored_at,
)
from exchange.errors import EmbeddedServerError
from exchange.private_files import write_private
from exchange.servers.edge import (
    edge_config,
    edge_notify_consumer,
    edge_streams,
    edge_submit_consumer,
)
from exchange.servers.embedded import free_port, nats_server_binary
from exchange.servers.nats_accounts import new_seed, public_key

RUN_FILE = "edge.json"


@dataclass
class EdgeNode:
    """The edge of ``institution`` (of ``consortium``) in ``folder``, linked to the hub's leaf
    ports ``hub_leaf_urls`` as the user of ``leaf_creds`` (TLS checked against ``ca``)."""

    folder: Path
    consortium: str
    institution: str
    hub_leaf_urls: list[str]
    leaf_creds: Path
    ca: Path | None = None
    port: int = 0
    monitor_port: int = 0
    sync_interval: str = "always"  # another only for measuring what "always" costs
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def seed_file(self) -> Path:
        return self.folder / "client.nk"

    @property
    def log(self) -> Path:
        return self.folder / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _client_key(self) -> str:
        if not self.seed_file.exists():
            write_private(self.seed_file, new_seed(nkeys.PREFIX_BYTE_USER).decode())
        return public_key(self.seed_file.read_bytes().strip())

    def start(self) -> None:
        """Write the configuration and start nats-server; returns once it is ready (its
        store is read back first: a restart after a power cut loses nothing it acknowledged)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        config = self.folder / "nats.conf"
        config.write_text(
            edge_config(
                consortium=self.consortium,
                institution=self.institution,
                store_dir=self.folder / "jetstream",
                port=self.port,
                hub_leaf_urls=self.hub_leaf_urls,
                leaf_creds=self.leaf_creds.resolve(),
                client_nkey=self._client_key(),
                monitor_port=self.monitor_port,
                ca=self.ca.resolve() if self.ca else None,
                sync_interval=self.sync_interval,
            )
        )
        mark = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            with open(self.log, "rb") as log:
                log.seek(mark)
                if b"Server is ready" in log.read():
                    break
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise EmbeddedServerError(f"the edge's nats-server exited; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                raise EmbeddedServerError("the edge's nats-server was not ready within 60 s")
            time.sleep(0.1)
        write_private(
            self.folder / RUN_FILE,
            json.dumps(
                {
                    "pid": self.proc.pid,
                    "url": self.url,
                    "monitor": f"http://127.0.0.1:{self.monitor_port}",
                    "consortium": self.consortium,
                    "institution": self.institution,
                    "seed": str(self.seed_file),
                }
            ),
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if sig != signal.SIGKILL:
            (self.folder / RUN_FILE).unlink(missing_ok=True)

    async def connect(self) -> Client:
        return await connect_local(self.url, self.seed_file)

    async def prepare(self) -> None:
        """The edge's streams, the hub's consumer on its queue and the clinic's on its
        notifications (made, or left as they are: a restart keeps what they hold)."""
        nc = await self.connect()
        try:
            js = nc.jetstream()
            for config in edge_streams(self.consortium, self.institution):
                try:
                    await js.stream_info(config.name)  # type: ignore[arg-type]
                except NotFoundError:
                    await js.add_stream(config)
            consumers = [
                (EDGE_SUBMIT, edge_submit_consumer(self.consortium, self.institution)),
                (EDGE_NOTIFY, edge_notify_consumer()),
            ]
            for stream, consumer in consumers:
                try:
                    await js.consumer_info(stream, str(consumer.durable_name))
                except NotFoundError:
                    await js.add_consumer(stream, consumer)
        finally:
            await nc.close()


async def connect_local(url: str, seed_file: Path, inbox_prefix: str = "_INBOX") -> Client:
    """The clinic's own client of its edge (on the same machine); ``inbox_prefix``: where
    answers come, for requests that go on to the hub (exchange/servers/edge_heal.py)."""
    return await nats.connect(
        url, nkeys_seed=str(seed_file), allow_reconnect=False, inbox_prefix=inbox_prefix
    )


async def first_queued_at(js: JetStreamContext, first_seq: int, subject: str) -> datetime | None:
    """When the oldest submission the edge still holds was stored: the first at or after
    ``first_seq``, where the stream's state said its queue began; by the time it is asked for,
    the hub may have taken that one (the queue is a work queue). None: the queue is empty."""
    try:
        msg = await js.get_msg(EDGE_SUBMIT, seq=first_seq, subject=subject, next=True)
    except NotFoundError:
        return None
    return stored_at(msg.time)


def running_edge(folder: Path) -> dict[str, Any] | None:
    """What ``edge.json`` says of the edge running from ``folder``; None if none runs."""
    try:
        doc: dict[str, Any] = json.loads((folder / RUN_FILE).read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return doc


async def edge_status(doc: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The edge's state: whether its link to the hub is up, how many submissions it holds
    and the oldest one's age, when the last receipt came down, and what the receipts say of
    the clinic's clock."""
    now = now or datetime.now(UTC)
    async with httpx.AsyncClient(timeout=5) as http:  # the edge's monitor, on loopback
        leafz = (await http.get(f"{doc['monitor']}/leafz")).json()
    nc = await connect_local(doc["url"], Path(doc["seed"]))
    try:
        js = nc.jetstream()
        queue = (await js.stream_info(EDGE_SUBMIT)).state
        oldest = None
        if queue.messages:
            subject = edge_subject(doc["consortium"], doc["institution"])
            first = await first_queued_at(js, queue.first_seq, subject)
            oldest = (now - first).total_seconds() if first else None
        receipts = (await js.stream_info(EDGE_RECEIPTS)).state
        last_receipt = None
        if receipts.messages:
            last_receipt = stored_at((await js.get_msg(EDGE_RECEIPTS, seq=receipts.last_seq)).time)
        notify = (await js.stream_info(EDGE_NOTIFY)).state
        clock = await edge_clock_offset(js)
    finally:
        await nc.close()
    return {
        "institution": doc["institution"],
        "link": "up" if leafz.get("leafnodes") else "down",
        "queued": queue.messages,
        "oldest_queued_s": round(oldest, 1) if oldest is not None else None,
        "receipts": receipts.messages,
        "last_receipt_at": last_receipt.isoformat() if last_receipt else None,
        "notifications": notify.messages,
        # This machine's clock against the exchange's, at most (from the receipts; negative:
        # behind by at least that much); None before the first receipt came down.
        "clock_offset_s": round(clock, 1) if clock is not None else None,
    }
