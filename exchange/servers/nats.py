"""NATS JetStream: connecting, and the streams and consumers the exchange owns.

Subjects (DESIGN.md wire contract), with <c> the consortium and <i> an institution:
``hie.<c>.submit.<i>`` → stream SUBMIT (work queue, consumed by the gateway);
``hie.<c>.receipt.<i>`` → stream RECEIPTS (so a sender that was away still finds its receipt);
``hie.<c>.deadletter.<i>`` → stream DEADLETTER (every rejected submission, kept with reasons);
``hie.<c>.notify.<i>`` → stream NOTIFY (referral steps; one durable consumer per institution,
``notify-<i>``, so an institution that was offline gets what it missed, in order).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0
# One ledger save must stay far below the size at which the recorder's pipelined save can hang
# (DESIGN.md); NATS's default max_payload is 1 MiB as well.
MAX_SUBMISSION_BYTES = 1024 * 1024
GATEWAY_CONSUMER = "gateway"
_DAY = 86_400.0
NOTIFY_DAYS = 90  # how long a notification waits for an institution that stays offline


def stream_name(consortium: str, what: str) -> str:
    return f"HIE_{consortium.upper().replace('-', '_')}_{what}"


def submit_subject(consortium: str, institution: str) -> str:
    return f"hie.{consortium}.submit.{institution}"


def receipt_subject(consortium: str, institution: str) -> str:
    return f"hie.{consortium}.receipt.{institution}"


def deadletter_subject(consortium: str, institution: str) -> str:
    return f"hie.{consortium}.deadletter.{institution}"


def notify_subject(consortium: str, institution: str) -> str:
    return f"hie.{consortium}.notify.{institution}"


def alert_subject(consortium: str) -> str:
    """Where the regulator's console hears each alert the moment it is in the audit log."""
    return f"hie.{consortium}.audit.alert"


# The exchange's own patient portal: notices to patients (a break-glass on their record) go to
# its notifications, kept for its durable consumer like any institution's.
PORTAL = "patient-portal"


def notify_consumer(institution: str) -> str:
    return f"notify-{institution}"


async def ensure_notify_consumer(js: JetStreamContext, consortium: str, institution: str) -> None:
    """The institution's durable consumer of its notifications (kept while it is away)."""
    await js.add_consumer(
        stream_name(consortium, "NOTIFY"),
        ConsumerConfig(
            durable_name=notify_consumer(institution),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_deliver=-1,
            filter_subject=notify_subject(consortium, institution),
        ),
    )


def receipts_consumer(institution: str) -> str:
    return f"receipts-{institution}"


async def ensure_institution_consumers(
    js: JetStreamContext, consortium: str, institution: str
) -> None:
    """The durable consumers an institution reads through when its NATS user may manage none
    (exchange/servers/nats_accounts.py): its receipts and its notifications."""
    await js.add_consumer(
        stream_name(consortium, "RECEIPTS"),
        ConsumerConfig(
            durable_name=receipts_consumer(institution),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            # A receipt another `hie submit` of the same institution waits for is handed back
            # (nak) for it; one nobody waits for any more is dropped after this many turns.
            max_deliver=RECEIPT_DELIVERIES,
            filter_subject=receipt_subject(consortium, institution),
        ),
    )
    await ensure_notify_consumer(js, consortium, institution)


RECEIPT_DELIVERIES = 20


def server_urls(url: str) -> list[str]:
    """``HIE_NATS_URL``: one URL, or several separated by commas (the cluster's nodes)."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(
    url: str,
    name: str,
    *,
    creds: Path | None = None,
    ca: Path | None = None,
    inbox_prefix: str | None = None,
) -> Client:
    """A connection to any of the nodes in ``url``, as the user of ``creds``, checking the
    servers' certificates against ``ca`` (TLS), replies under ``inbox_prefix`` (a user whose
    permissions name its own inbox, exchange/servers/nats_accounts.py)."""

    async def on_error(exc: Exception) -> None:
        # Permission violations arrive here, not at the publisher (DESIGN.md): say so.
        log.error("NATS error on connection %s: %s", name, exc)

    made: list[Client] = []

    async def on_disconnected() -> None:
        if not (made and made[0].is_closed):  # closing on purpose is no loss
            log.warning("NATS connection %s lost; reconnecting", name)

    async def on_reconnected() -> None:
        log.info("NATS connection %s re-established", name)

    options: dict[str, Any] = {}
    if creds is not None:
        options["user_credentials"] = str(creds)
    if ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(ca))
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    nc = await nats.connect(
        server_urls(url),
        name=name,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        # A server cut off by the network answers nothing (no reset): pings find out, and
        # the client moves to another node, within about 15 s.
        ping_interval=5,
        max_outstanding_pings=3,
        **options,
    )
    made.append(nc)
    return nc


def cluster_size(nc: Client) -> int:
    """How many nodes the connected server's cluster has (1: a single server)."""
    info = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, len(set(info.get("connect_urls") or [])))


async def ensure_streams(
    js: JetStreamContext,
    consortium: str,
    replicas: int = 1,
    *,
    patience: float = 60.0,
    notify_for: Sequence[str] = (),
) -> None:
    """Create or update the exchange's streams (``replicas`` copies of each: 3 on a cluster),
    the gateway's durable consumer, and the notification consumers of ``notify_for``. A
    cluster still forming (or electing a leader: just started, or a node just lost) refuses
    for a while ("no suitable peers", timeouts): tried again for ``patience`` s."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            await _ensure_streams(js, consortium, replicas)
            for institution in notify_for:
                await ensure_notify_consumer(js, consortium, institution)
            return
        except (TimeoutError, NatsError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("NATS streams not ready yet (%s); trying again", exc)
            await asyncio.sleep(1.0)


async def _ensure_streams(js: JetStreamContext, consortium: str, replicas: int) -> None:
    configs = [
        StreamConfig(
            name=stream_name(consortium, "SUBMIT"),
            subjects=[f"hie.{consortium}.submit.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_msg_size=MAX_SUBMISSION_BYTES,
            discard=DiscardPolicy.NEW,
        ),
        StreamConfig(
            name=stream_name(consortium, "RECEIPTS"),
            subjects=[f"hie.{consortium}.receipt.*"],
            storage=StorageType.FILE,
            max_age=30 * _DAY,
            duplicate_window=DUPLICATE_WINDOW_S,
            allow_direct=True,  # an edge reads the last of its clinic's (edge_heal.py)
        ),
        StreamConfig(  # signed audit tree heads, for witnesses and regulators to follow
            name=stream_name(consortium, "AUDIT"),
            subjects=[f"hie.{consortium}.audit.head", alert_subject(consortium)],
            storage=StorageType.FILE,
            allow_direct=True,  # a witness reads the last head by subject, nothing more
        ),
        StreamConfig(
            name=stream_name(consortium, "DEADLETTER"),
            subjects=[f"hie.{consortium}.deadletter.*"],
            storage=StorageType.FILE,
            max_age=365 * _DAY,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=stream_name(consortium, "NOTIFY"),
            subjects=[f"hie.{consortium}.notify.*"],
            storage=StorageType.FILE,
            max_age=NOTIFY_DAYS * _DAY,
            duplicate_window=_DAY,  # few messages: repeats after a notifier restart are dropped
            allow_direct=True,  # an edge reads the last of its clinic's (edge_heal.py)
        ),
    ]
    for config in configs:
        config.num_replicas = replicas
        try:
            held = await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await js.add_stream(config)
            continue
        # The sources a running exchange added (a village clinic's edge node, whose queued
        # submissions the submit stream sources) are kept: an update without them would cut
        # every edge off at each start.
        config.sources = held.config.sources
        await js.update_stream(config)
    await js.add_consumer(
        stream_name(consortium, "SUBMIT"),
        ConsumerConfig(
            durable_name=GATEWAY_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=10.0,  # a crashed gateway's unacked batch comes back within seconds
            max_ack_pending=2000,
            max_deliver=-1,
            filter_subject=f"hie.{consortium}.submit.*",
        ),
    )
