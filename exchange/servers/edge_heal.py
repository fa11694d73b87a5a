"""The edge's watch over what comes down from the hub (run by `hie edge up`): receipts and
notifications the hub holds for the clinic that stopped coming down are asked for again.

Why it is needed (nats-server 2.14–2.15, read in its source): a stream that sources through a
consumer the hub made ("bring your own consumer") resets that consumer whenever it sets the
source up again — at start, after a reconnect, after missed heartbeats — and takes the
consumer's *delivered* position from the reset's answer as its own. The hub may deliver in
the moment between the reset and that answer, into a subscription the edge has just dropped;
those messages are lost, the edge's position is past them, and its next flow-control reply
acknowledges them, so nothing ever sends them again. Seen in the edge outage tests under
load: after a power cut at the clinic, 1,000 of 1,500 receipts never came down, and the
hub's consumer said all were delivered and acknowledged.

The sign of it, on two looks ``WATCH_EVERY`` apart with the link up: the hub held, at the
first look, a message for the clinic later than the last one the edge has stored, and at the
second the edge has stored nothing more. (The consumer's own acknowledgement floor says
nothing: with nothing pending, nats-server moves it to the last sequence the consumer looked
at, often another clinic's.) The repair: take the source off the edge's stream, set the hub's
consumer back to just after the last message stored, and put the source back, which resumes
from there. A gap followed by messages the edge did store cannot be seen this way; a
clinic's `hie submit` settles such receipts by sending again (the hub answers a repeat with
its receipt).

The leaf user may read the last message of its own two subjects and reset its own two
consumers, nothing more (``leaf_permissions``); an edge whose credentials predate that is
not watched (its looks get no answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from adapters.nats import EDGE_NOTIFY, EDGE_RECEIPTS
from exchange.servers.edge import HUB_DOMAIN, down_consumer
from exchange.servers.nats import notify_subject, receipt_subject, stream_name

log = logging.getLogger(__name__)
# Where the edge's requests to the hub take their answers: the leaf user may receive these.
INBOX_PREFIX = "$JSC.R.edge"
SOURCE_HEADER = "Nats-Stream-Source"


@dataclass(frozen=True)
class Down:
    """One way down: the edge's stream; the hub's stream, the clinic's subject in it and the
    hub's consumer feeding the edge."""

    edge_stream: str
    hub_stream: str
    subject: str
    consumer: str


def ways_down(consortium: str, institution: str) -> list[Down]:
    return [
        Down(
            EDGE_RECEIPTS,
            stream_name(consortium, "RECEIPTS"),
            receipt_subject(consortium, institution),
            down_consumer(institution, "rcpt"),
        ),
        Down(
            EDGE_NOTIFY,
            stream_name(consortium, "NOTIFY"),
            notify_subject(consortium, institution),
            down_consumer(institution, "ntfy"),
        ),
    ]


def direct_get_subject(way: Down) -> str:
    """The hub's last message on the clinic's subject (the subject in the request's own
    subject, so that a permission can name it)."""
    return f"$JS.{HUB_DOMAIN}.API.DIRECT.GET.{way.hub_stream}.{way.subject}"


def reset_subject(way: Down) -> str:
    return f"$JS.{HUB_DOMAIN}.API.CONSUMER.RESET.{way.hub_stream}.{way.consumer}"


@dataclass(frozen=True)
class Look:
    at_hub: int  # the hub sequence of its last message for the clinic (0: none)
    stored: int  # the hub sequence of the last message the edge holds (0: none)


def stalled(before: Look | None, now: Look) -> bool:
    """Whether what the hub held at ``before`` is still missing at ``now`` and nothing came
    down meanwhile."""
    return before is not None and before.at_hub > now.stored and now.stored == before.stored


async def last_stored(js: JetStreamContext, stream: str) -> int | None:
    """The hub sequence of the last message ``stream`` holds (its source header); 0 when it
    never held one; None when it cannot tell (its messages expired, or no header)."""
    state = (await js.stream_info(stream)).state
    if state.last_seq == 0:
        return 0
    try:
        msg = await js.get_msg(stream, seq=state.last_seq)
    except NotFoundError:
        return None
    return hub_sequence(msg.headers)


def hub_sequence(headers: dict[str, str] | None) -> int | None:
    """The hub stream sequence a sourced message's header names (None: no such header)."""
    parts = (headers or {}).get(SOURCE_HEADER, "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def last_at_hub(nc: Client, way: Down) -> int | None:
    """The hub sequence of its last message for the clinic (0: none); None: no answer."""
    try:
        reply = await nc.request(direct_get_subject(way), b"", timeout=5)
    except (NatsTimeout, NoRespondersError):
        return None
    headers = reply.headers or {}
    if "Nats-Sequence" in headers:
        return int(headers["Nats-Sequence"])
    return 0 if headers.get("Status") == "404" else None


@dataclass
class Watch:
    """The edge's watch; ``look`` once every ``WATCH_EVERY`` s."""

    consortium: str
    institution: str
    last: dict[str, Look] = field(default_factory=dict)

    async def look(self, nc: Client) -> list[str]:
        """One look at each way down, repairing a stalled one; the edge streams repaired.
        ``nc``: the edge's own client, its inbox under ``INBOX_PREFIX``."""
        js = nc.jetstream()
        repaired = []
        for way in ways_down(self.consortium, self.institution):
            stored = await last_stored(js, way.edge_stream)
            at_hub = await last_at_hub(nc, way)
            if stored is None or at_hub is None:  # cannot tell, or the link is down
                self.last.pop(way.edge_stream, None)
                continue
            now = Look(at_hub, stored)
            if stalled(self.last.get(way.edge_stream), now):
                log.warning(
                    "edge watch: %s holds up to %d, the hub had %d and sends nothing more: "
                    "asking again for what came after",
                    way.edge_stream,
                    stored,
                    self.last[way.edge_stream].at_hub,
                )
                await _repair(nc, way, stored)
                repaired.append(way.edge_stream)
                self.last.pop(way.edge_stream, None)
            else:
                self.last[way.edge_stream] = now
        return repaired


async def _repair(nc: Client, way: Down, stored: int) -> None:
    """The source off the edge's stream, the hub's consumer set to just after ``stored``,
    the source back on (it resumes from the consumer's floor)."""
    js = nc.jetstream()
    config = (await js.stream_info(way.edge_stream)).config
    sources = config.sources
    config.sources = []
    await js.update_stream(config)
    try:
        await nc.request(reset_subject(way), f'{{"seq": {stored + 1}}}'.encode(), timeout=5)
    finally:
        config.sources = sources
        await js.update_stream(config)
