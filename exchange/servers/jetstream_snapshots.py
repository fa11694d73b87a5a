"""JetStream stream snapshots: a stream's messages and its consumers (configuration and
state) taken from a running server into a file, and restored into another server.

nats-py has no helper for this; the protocol is JetStream's own API (the one the `nats` CLI
uses for `nats stream backup` / `restore`):

Snapshot. Subscribe to an inbox, then request ``$JS.API.STREAM.SNAPSHOT.<stream>`` with
``deliver_subject`` (the inbox), ``chunk_size``, ``window_size`` and ``no_consumers: false``
(consumers included). The answer is the stream's configuration and state as of the snapshot;
then the server sends the snapshot to the inbox in chunks. A chunk that carries a reply
subject takes one of the window's slots: answering it (any payload) gives the slot back, and a
server that hears no answer for a few seconds gives up (status 408). The snapshot ends with a
message without payload: status 204 (or none) when complete, otherwise an error status (the
stream failed, or the server lost interest). The bytes are the server's own archive format
(compressed); they are kept as they came.

Restore. Request ``$JS.API.STREAM.RESTORE.<stream>`` with the configuration and state the
snapshot answered (the stream must not exist); the answer names a subject to send the
snapshot to. Each chunk is a request to it, answered without payload when written (or with a
JSON error); an empty request ends the transfer, and the last answer is the created stream's
information. The server gives up on a transfer idle for a few seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from exchange.errors import BackupError
from exchange.servers.nats import stream_name

API = "$JS.API"
SNAPSHOT_CHUNK = 128 * 1024  # what the server sends per message
SNAPSHOT_WINDOW = 8 * 1024 * 1024  # unanswered bytes the server may have on their way
RESTORE_CHUNK = 64 * 1024  # what we send per request (well below the 1 MiB max_payload)
CHUNK_WAIT_S = 30.0  # no chunk for this long: the snapshot has stalled
FINISH_WAIT_S = 3600.0  # the server rebuilds the stream after the last chunk: may take long

# The exchange's streams (exchange.servers.nats.ensure_streams), in the order a backup takes
# them around the database's base backup: the work queue first (a submission acknowledged
# after its snapshot is already in the ledger by the end of the base backup, and one not yet
# acknowledged comes back from the snapshot and is answered from the ledger), then what the
# gateway and the head signer publish after their PostgreSQL commit (every receipt, dead
# letter and signed head in them is then in the database too). The notifications come after
# the base backup: the notifier keeps its position in PostgreSQL and publishes before moving
# it, so every notification the restored database counts as sent is in the snapshot.
BEFORE_DATABASE = ("SUBMIT", "RECEIPTS", "DEADLETTER", "AUDIT")
AFTER_DATABASE = ("NOTIFY",)


def exchange_streams(consortium: str) -> list[str]:
    """The consortium's stream names, in the order a backup takes (and a restore makes) them."""
    return [stream_name(consortium, what) for what in (*BEFORE_DATABASE, *AFTER_DATABASE)]


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot answered (the stream's configuration and state as of the snapshot)
    and what was written: the file's size and SHA-256."""

    stream: str
    config: dict[str, Any]
    state: dict[str, Any]
    size: int
    sha256: str

    @property
    def meta(self) -> dict[str, Any]:
        """What the restore request needs (and what `nats stream backup` keeps beside it)."""
        return {"config": self.config, "state": self.state}


async def _api(nc: Client, subject: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One JetStream API request; an API error is a BackupError naming the stream."""
    try:
        reply = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    except NatsTimeout:
        raise BackupError(f"JetStream did not answer {subject} within {timeout:.0f} s") from None
    doc: dict[str, Any] = json.loads(reply.data)
    if "error" in doc:
        err = doc["error"]
        raise BackupError(
            f"JetStream refused {subject}: {err.get('description', err)} "
            f"(code {err.get('err_code', err.get('code'))})"
        )
    return doc


async def snapshot_stream(
    nc: Client,
    stream: str,
    path: Path,
    *,
    chunk_size: int = SNAPSHOT_CHUNK,
    window_size: int = SNAPSHOT_WINDOW,
    check_messages: bool = True,
) -> Snapshot:
    """Snapshot ``stream`` with its consumers into ``path``, answering the server's flow
    control; ``check_messages`` has the server check every message's checksum first."""
    inbox = nc.new_inbox()
    # No callback: chunks queue in the subscription, at most a window's worth unanswered.
    sub = await nc.subscribe(inbox, pending_bytes_limit=4 * window_size + chunk_size)
    digest, size = hashlib.sha256(), 0
    try:
        answer = await _api(
            nc,
            f"{API}.STREAM.SNAPSHOT.{stream}",
            {
                "deliver_subject": inbox,
                "no_consumers": False,
                "chunk_size": chunk_size,
                "window_size": window_size,
                "jsck": check_messages,
            },
            timeout=FINISH_WAIT_S if check_messages else CHUNK_WAIT_S,
        )
        out = await asyncio.to_thread(open, path, "wb")
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=CHUNK_WAIT_S)
                except NatsTimeout:
                    raise BackupError(
                        f"the snapshot of stream {stream} stalled: no chunk for "
                        f"{CHUNK_WAIT_S:.0f} s after {size} bytes"
                    ) from None
                if not msg.data:  # the end: complete (204, or no status) or failed
                    status = (msg.headers or {}).get("Status", "")
                    if status and status != "204":
                        why = (msg.headers or {}).get("Description", "")
                        raise BackupError(
                            f"the server ended the snapshot of stream {stream} with status "
                            f"{status} {why}".rstrip()
                        )
                    break
                await asyncio.to_thread(out.write, msg.data)  # before the slot is given back
                digest.update(msg.data)
                size += len(msg.data)
                if msg.reply:
                    await nc.publish(msg.reply, b"")
        finally:
            out.close()
    finally:
        await sub.unsubscribe()
    if size == 0:
        raise BackupError(f"the snapshot of stream {stream} came without data")
    return Snapshot(stream, answer["config"], answer["state"], size, digest.hexdigest())


async def restore_stream(
    nc: Client, meta: dict[str, Any], path: Path, *, chunk_size: int = RESTORE_CHUNK
) -> dict[str, Any]:
    """Make the stream ``meta`` describes (``Snapshot.meta``) from the snapshot in ``path``,
    consumers included; the created stream's information as the server answered it."""
    name = str(meta["config"]["name"])
    answer = await _api(
        nc,
        f"{API}.STREAM.RESTORE.{name}",
        {"config": meta["config"], "state": meta["state"]},
        timeout=CHUNK_WAIT_S,
    )
    deliver = str(answer["deliver_subject"])
    sent = 0
    data = await asyncio.to_thread(open, path, "rb")
    try:
        while block := await asyncio.to_thread(data.read, chunk_size):
            try:
                reply = await nc.request(deliver, block, timeout=CHUNK_WAIT_S)
            except NatsTimeout:
                raise BackupError(
                    f"the restore of stream {name} stalled after {sent} bytes"
                ) from None
            if reply.data:  # an error; a written chunk is answered without payload
                raise BackupError(f"the restore of stream {name} failed: {_error_of(reply.data)}")
            sent += len(block)
    finally:
        data.close()
    try:
        final = await nc.request(deliver, b"", timeout=FINISH_WAIT_S)
    except NatsTimeout:
        raise BackupError(f"the server did not finish restoring stream {name}") from None
    info: dict[str, Any] = json.loads(final.data)
    if "error" in info:
        raise BackupError(f"the restore of stream {name} failed: {_error_of(final.data)}")
    return info


def _error_of(data: bytes) -> str:
    try:
        err = json.loads(data).get("error", {})
        return str(err.get("description", err))
    except (ValueError, AttributeError):
        return data[:200].decode(errors="replace")
