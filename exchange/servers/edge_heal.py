"""The edge's watch over what comes down from the hub (run by `hie edge up`): receipts and
notifications the hub counts as delivered and acknowledged that the edge never stored are
asked for again.

Why it is needed (nats-server 2.14–2.15, read in its source): a stream that sources through a
consumer the hub made ("bring your own consumer") resets that consumer whenever it sets the
source up again — at start, after a reconnect, after missed heartbeats — and takes the
consumer's *delivered* position from the reset's answer as its own. The hub may deliver in
the moment between the reset and that answer, into a subscription the edge has just dropped;
those messages are lost, the edge's position is past them, and its next flow-control reply
acknowledges them. Seen in the edge outage tests under load: after a power cut at the clinic,
1,000 of 1,500 receipts never came down, and the hub's consumer said all were delivered.

The sign of it: the hub's consumer has acknowledged a message of a sequence beyond the last
one the edge stored (the edge answers flow control only after it has stored what it
acknowledges, so that never happens otherwise). The repair: take the source off the edge's
stream, set the hub's consumer back to just after the last one stored, and put the source
back, which resumes from there. A gap followed by messages the edge did store cannot be seen
this way; a clinic's `hie submit` settles such receipts by sending again (the hub answers a
repeat with its receipt).

The leaf user may ask for the consumer's info (and reset it) for its own two consumers only
(``leaf_permissions``); an edge whose credentials predate that is not watched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from adapters.nats import EDGE_NOTIFY, EDGE_RECEIPTS
from exchange.servers.edge import HUB_DOMAIN, down_consumer
from exchange.servers.nats import stream_name

log = logging.getLogger(__name__)
# Where the edge's requests to the hub take their answers: the leaf user may receive these.
INBOX_PREFIX = "$JSC.R.edge"
SOURCE_HEADER = "Nats-Stream-Source"


@dataclass(frozen=True)
class Down:
    """One way down: the edge's stream, the hub's stream and the hub's consumer feeding it."""

    edge_stream: str
    hub_stream: str
    consumer: str


def ways_down(consortium: str, institution: str) -> list[Down]:
    return [
        Down(
            EDGE_RECEIPTS, stream_name(consortium, "RECEIPTS"), down_consumer(institution, "rcpt")
        ),
        Down(EDGE_NOTIFY, stream_name(consortium, "NOTIFY"), down_consumer(institution, "ntfy")),
    ]


def lost(acknowledged: int, last_stored: int | None) -> bool:
    """Whether the hub acknowledged more than the edge stored (``acknowledged``: the hub
    consumer's ack floor as a stream sequence, read *before* ``last_stored``, the hub
    sequence of the last message the edge holds; None: the edge cannot tell)."""
    return last_stored is not None and acknowledged > last_stored


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
    parts = (msg.headers or {}).get(SOURCE_HEADER, "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def _hub(
    nc: Client, verb: str, way: Down, body: dict[str, int] | None = None
) -> dict[str, Any]:
    subject = f"$JS.{HUB_DOMAIN}.API.CONSUMER.{verb}.{way.hub_stream}.{way.consumer}"
    reply = await nc.request(subject, json.dumps(body).encode() if body else b"", timeout=5)
    answer: dict[str, Any] = json.loads(reply.data)
    if "error" in answer:
        raise LookupError(answer["error"].get("description", "the hub refused"))
    return answer


async def heal(nc: Client, consortium: str, institution: str) -> list[str]:
    """One look at each way down, repairing any the hub acknowledged past what the edge
    stored; the edge streams repaired. ``nc``: the edge's own client, its inbox under
    ``INBOX_PREFIX``. Raises nothing for a hub out of reach (or credentials without the
    permission): that look is skipped."""
    js = nc.jetstream()
    repaired = []
    for way in ways_down(consortium, institution):
        try:
            info = await _hub(nc, "INFO", way)
        except (NatsTimeout, NoRespondersError, LookupError) as exc:
            log.debug("edge watch: no answer about %s (%s)", way.consumer, exc)
            continue
        acknowledged = int((info.get("ack_floor") or {}).get("stream_seq") or 0)
        stored = await last_stored(js, way.edge_stream)
        if not lost(acknowledged, stored):
            continue
        assert stored is not None
        log.warning(
            "edge watch: the hub counts %s as delivered up to %d, the edge holds up to %d: "
            "asking again for what came after",
            way.edge_stream,
            acknowledged,
            stored,
        )
        config = (await js.stream_info(way.edge_stream)).config
        sources = config.sources
        config.sources = []
        await js.update_stream(config)
        try:
            await _hub(nc, "RESET", way, {"seq": stored + 1})
        finally:
            config.sources = sources
            await js.update_stream(config)
        repaired.append(way.edge_stream)
    return repaired
