"""A village clinic's edge node (issue 16): a NATS leaf node with its own JetStream domain that
keeps the clinic's submissions while its link to the exchange (the hub) is down, and that the
hub's submit stream sources from when the link is up; receipts and notifications come back
down the same way.

    hub (operator/JWT, JetStream domain "hub")          edge (domain "edge-<i>", fsync always)
    HIE_<C>_SUBMIT  <- source, consumer "hub-<i>" --     EDGE_SUBMIT (work queue on the local
       transform hie.<c>.edge.<i> -> submit.<i>             subject hie.<c>.edge.<i>)
    HIE_<C>_RECEIPTS -- consumer "edge-<i>-rcpt" --->    EDGE_RECEIPTS (sources it, keeps them)
    HIE_<C>_NOTIFY   -- consumer "edge-<i>-ntfy" --->    EDGE_NOTIFY   (sources it, keeps them)

What the design rests on (measured with nats-server 2.15 on loopback and in network namespaces
with the edge's link taken down; see the issue's notes):

- Every consumer that crosses the link is made ahead of time by the side that owns the stream
  ("bring your own consumer", nats-server 2.14+): a durable push consumer acknowledged by flow
  control. The origin's message is acknowledged only once the other side has stored it, and
  the sourcing side resumes within a second of the link coming back (with consumers the
  server makes itself, its retry back-off held the catch-up back 20–40 s, up to 2 minutes).
- The edge's submit stream is a work queue: what the hub has stored leaves it, and the
  consumer's ack floor, not a comparison of the two machines' clocks, says where to resume.
- The clinic publishes on a subject of its own (``hie.<c>.edge.<i>``), which the hub's source
  transforms into the submit subject: the same subject on both sides would be captured twice
  across the leaf (only the duplicate window, 2 minutes, would stop it).
- Order and exactly-once at the ledger: the source keeps the edge stream's order; a repeat
  (a redelivery after a crash anywhere) is refused by the ledger, which remains the guarantee.
- The edge's JetStream writes with ``sync_interval: always``: one fsync per stored message, so
  a power cut at the clinic loses nothing it acknowledged. What it costs the clinic's sender
  (bench/edge.py, signed submissions one at a time, interleaved with an edge on NATS's
  default, on a 2-core machine whose own fsync of 2 KiB takes 0.14 ms): a publish's
  acknowledgement p50 0.40-0.65 ms against 0.17-0.31 ms, about 1,400-2,300 a second against
  3,000-5,000 — nothing to a clinic's tens of submissions a day. On a disk whose fsync takes
  milliseconds, each submission costs that much more.
- The edge pings the hub every 5 s and gives the link up after two unanswered: a cut line
  says nothing, and `hie edge status` would otherwise say "up" for minutes.

The leaf connection logs in as a user of the consortium's account made for that edge alone
(``leaf_permissions``): the narrowest subjects found to work. Without the flow-control
subscription the failure is silent: the hub stores everything, the edge never learns it did,
and sends it all again after every reconnect.
"""

from __future__ import annotations

from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    ExternalStream,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerSource,
    StreamSource,
    SubjectTransform,
)

from adapters.nats import (
    EDGE_NOTIFY,
    EDGE_NOTIFY_CONSUMER,
    EDGE_RECEIPTS,
    EDGE_SUBMIT,
    edge_subject,
)
from exchange.servers.nats import (
    MAX_SUBMISSION_BYTES,
    NOTIFY_DAYS,
    stream_name,
    submit_subject,
)
from exchange.servers.nats_accounts import NatsAuthority, Permissions

HUB_DOMAIN = "hub"
# How much a clinic's edge keeps while offline before it refuses more (discard new): a
# village clinic sends tens of submissions a day; this is months of them.
EDGE_MAX_BYTES = 2 * 1024**3


def edge_domain(institution: str) -> str:
    return f"edge-{institution}"


def edge_of_api(api: str) -> str | None:
    """The institution whose edge a source's external API prefix (``$JS.edge-<i>.API``)
    names; None for any other."""
    head, tail = "$JS.edge-", ".API"
    if api.startswith(head) and api.endswith(tail) and len(api) > len(head) + len(tail):
        return api[len(head) : -len(tail)]
    return None


def up_subject(consortium: str, institution: str) -> str:
    """Where the edge delivers its queued submissions to the hub's source."""
    return f"hie.{consortium}.edgeup.{institution}.submit"


def down_subject(consortium: str, institution: str, what: str) -> str:
    """Where the hub delivers this edge's receipts ("rcpt") or notifications ("ntfy")."""
    return f"hie.{consortium}.edgedown.{institution}.{what}"


def hub_consumer(institution: str) -> str:
    """The hub's consumer on the edge's submit stream (named per edge: its flow-control
    subjects then reach that edge alone)."""
    return f"hub-{institution}"


def down_consumer(institution: str, what: str) -> str:
    return f"edge-{institution}-{what}"


def leaf_permissions(consortium: str, institution: str) -> Permissions:
    """The subjects of the user edge ``institution``'s leaf connection logs in as, seen from
    the edge: publish, what the edge may send up to the hub; subscribe, what the hub may send
    down to it."""
    receipts, notify = stream_name(consortium, "RECEIPTS"), stream_name(consortium, "NOTIFY")
    rcpt, ntfy = down_consumer(institution, "rcpt"), down_consumer(institution, "ntfy")
    hub = hub_consumer(institution)
    return Permissions(
        publish=[
            "$JSC.R.>",  # the edge's answers to the hub's requests on its consumer
            up_subject(consortium, institution),  # queued submissions, heartbeats, flow control
            f"$JS.{HUB_DOMAIN}.API.CONSUMER.RESET.{receipts}.{rcpt}",
            f"$JS.{HUB_DOMAIN}.API.CONSUMER.RESET.{notify}.{ntfy}",
            # The last of its own receipts and notifications, for the edge's watch
            # (edge_heal.py): the subject is in the request's subject, so no other's.
            f"$JS.{HUB_DOMAIN}.API.DIRECT.GET.{receipts}.hie.{consortium}.receipt.{institution}",
            f"$JS.{HUB_DOMAIN}.API.DIRECT.GET.{notify}.hie.{consortium}.notify.{institution}",
            f"$JS.FC.{receipts}.{rcpt}.>",  # flow-control replies: the edge's acknowledgements
            f"$JS.FC.{notify}.{ntfy}.>",
        ],
        subscribe=[
            f"$JS.{edge_domain(institution)}.API.CONSUMER.RESET.{EDGE_SUBMIT}.{hub}",
            f"$JS.FC.{EDGE_SUBMIT}.{hub}.>",  # the hub's flow-control replies: its acks
            "$JSC.R.>",  # the hub's answers to the edge's requests
            f"hie.{consortium}.edgedown.{institution}.>",  # this edge's receipts, notifications
        ],
    )


def flow_control_consumer(
    name: str, deliver_subject: str, filter_subject: str | None = None
) -> ConsumerConfig:
    """A consumer another server sources through (the server asks for exactly this: push,
    acknowledged by flow control, a heartbeat of one second, no ack wait)."""
    return ConsumerConfig(
        durable_name=name,
        deliver_subject=deliver_subject,
        ack_policy=AckPolicy.FLOW_CONTROL,
        flow_control=True,
        idle_heartbeat=1.0,
        max_ack_pending=1000,
        filter_subject=filter_subject,
    )


# The hub's side ------------------------------------------------------------------------------


def hub_source(consortium: str, institution: str) -> StreamSource:
    """The source the hub's submit stream takes the edge's queued submissions through."""
    return StreamSource(
        name=EDGE_SUBMIT,
        external=ExternalStream(api=f"$JS.{edge_domain(institution)}.API"),
        consumer=StreamConsumerSource(
            name=hub_consumer(institution), deliver_subject=up_subject(consortium, institution)
        ),
        subject_transforms=[
            SubjectTransform(
                src=edge_subject(consortium, institution),
                dest=submit_subject(consortium, institution),
            )
        ],
    )


def hub_down_consumers(consortium: str, institution: str) -> list[tuple[str, ConsumerConfig]]:
    """(stream, consumer) the hub makes for an edge: its receipts and its notifications."""
    return [
        (
            stream_name(consortium, "RECEIPTS"),
            flow_control_consumer(
                down_consumer(institution, "rcpt"),
                down_subject(consortium, institution, "rcpt"),
                f"hie.{consortium}.receipt.{institution}",
            ),
        ),
        (
            stream_name(consortium, "NOTIFY"),
            flow_control_consumer(
                down_consumer(institution, "ntfy"),
                down_subject(consortium, institution, "ntfy"),
                f"hie.{consortium}.notify.{institution}",
            ),
        ),
    ]


def with_edge_source(
    sources: list[StreamSource] | None, consortium: str, institution: str
) -> list[StreamSource]:
    """The submit stream's sources with this edge's (replacing an earlier one of it)."""
    api = f"$JS.{edge_domain(institution)}.API"
    kept = [s for s in sources or [] if s.external is None or s.external.api != api]
    return [*kept, hub_source(consortium, institution)]


def edge_creds(authority: NatsAuthority, consortium: str, institution: str) -> str:
    """A new user for the institution's edge node's leaf connection (its .creds text), kept
    with the institution's other users so that removing the institution revokes it too."""
    key, creds = authority.user_creds(
        f"edge-{institution}", leaf_permissions(consortium, institution)
    )
    authority.remember(institution, key)
    return creds


async def register_edge(js: JetStreamContext, consortium: str, institution: str) -> None:
    """The hub's side of an edge node (run by `hie edge add` as the exchange's user): the
    consumers its receipts and notifications come down through, and the submit stream's
    source of its queue. Running it again changes nothing."""
    for stream, consumer in hub_down_consumers(consortium, institution):
        await js.add_consumer(stream, consumer)
    submit = stream_name(consortium, "SUBMIT")
    config = (await js.stream_info(submit)).config
    config.sources = with_edge_source(config.sources, consortium, institution)
    await js.update_stream(config)


# The edge's side -----------------------------------------------------------------------------


def edge_streams(consortium: str, institution: str) -> list[StreamConfig]:
    """The edge's streams: its queue of submissions, and its copies of the hub's receipts and
    notifications for the clinic (kept: the clinic sees what was accepted after an outage)."""
    receipts, notify = stream_name(consortium, "RECEIPTS"), stream_name(consortium, "NOTIFY")

    def down(name: str, origin: str, what: str, days: int) -> StreamConfig:
        return StreamConfig(
            name=name,
            storage=StorageType.FILE,
            max_age=days * 86_400.0,
            sources=[
                StreamSource(
                    name=origin,
                    external=ExternalStream(api=f"$JS.{HUB_DOMAIN}.API"),
                    # The hub's consumer filters to this clinic (a source may not as well).
                    consumer=StreamConsumerSource(
                        name=down_consumer(institution, what),
                        deliver_subject=down_subject(consortium, institution, what),
                    ),
                )
            ],
        )

    return [
        StreamConfig(
            name=EDGE_SUBMIT,
            subjects=[edge_subject(consortium, institution)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_bytes=EDGE_MAX_BYTES,
            max_msg_size=MAX_SUBMISSION_BYTES,
            duplicate_window=120.0,  # a client's resend of the same id while online
        ),
        # A year of receipts (a clinic's sender settles what it queued from them, however
        # long it stayed offline); notifications as long as the hub keeps them for the clinic.
        down(EDGE_RECEIPTS, receipts, "rcpt", 365),
        down(EDGE_NOTIFY, notify, "ntfy", NOTIFY_DAYS),
    ]


def edge_notify_consumer() -> ConsumerConfig:
    """The clinic's own consumer of the notifications its edge keeps: each acknowledged once
    `hie notifications` printed it; what it has not read waits there, in order."""
    return ConsumerConfig(
        durable_name=EDGE_NOTIFY_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
    )


def edge_submit_consumer(consortium: str, institution: str) -> ConsumerConfig:
    """The consumer the hub's source reads the edge's queue through."""
    return flow_control_consumer(hub_consumer(institution), up_subject(consortium, institution))


def edge_config(
    *,
    consortium: str,
    institution: str,
    store_dir: Path,
    port: int,
    hub_leaf_urls: list[str],
    leaf_creds: Path,
    client_nkey: str,
    monitor_port: int | None = None,
    host: str = "127.0.0.1",
    ca: Path | None = None,
    sync_interval: str = "always",
) -> str:
    """The edge's nats-server configuration: JetStream in its own domain, writing with an
    fsync per message; the clinic's client (``client_nkey``'s user) in a local account that
    the leaf connection binds to the consortium's account on the hub. (``sync_interval``
    other than "always" is for bench/edge.py's measure of what the fsync costs.)"""
    urls = ", ".join(f'"{u}"' for u in hub_leaf_urls)
    # The hub's certificate checked against the county CA (its leaf port speaks TLS).
    tls = f' tls: {{ ca_file: "{ca}" }},' if ca else ""
    monitor = f"http: 127.0.0.1:{monitor_port}\n" if monitor_port else ""
    return (
        f"# A village clinic's edge node of consortium {consortium} (made by `hie edge up`).\n"
        f"server_name: {edge_domain(institution)}\n"
        f"listen: {host}:{port}\n"
        f"{monitor}"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        f"  domain: {edge_domain(institution)}\n"
        f'  sync_interval: "{sync_interval}"\n'
        "}\n"
        "# A cut line says nothing (packets just vanish): a ping every 5 s, the link given up\n"
        "# after two unanswered, so the edge notices within about 15 s (NATS's default, 2\n"
        "# minutes, left `hie edge status` saying the link was up for 4 to 6 minutes).\n"
        'ping_interval: "5s"\n'
        "ping_max: 2\n"
        "accounts {\n"
        "  CLINIC: {\n"
        "    jetstream: enabled\n"
        f"    users: [ {{ nkey: {client_nkey} }} ]\n"
        "  }\n"
        "  SYS: {}\n"
        "}\n"
        "system_account: SYS\n"
        "leafnodes {\n"
        '  reconnect: "1s"\n'
        "  remotes: [\n"
        f'    {{ urls: [{urls}], account: CLINIC, credentials: "{leaf_creds}",{tls} }}\n'
        "  ]\n"
        "}\n"
    )
