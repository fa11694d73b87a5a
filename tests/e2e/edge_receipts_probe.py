"""Run at a clinic, inside its namespace, by a failed edge test's report: the hub's stream
sequence of every receipt the clinic's edge keeps (from each message's Nats-Stream-Source
header), as one JSON list on standard output. The report compares it with the receipts the
hub holds for the clinic: a receipt missing at the edge was lost on the way down, a stalled
way down keeps none after some point. Not collected as tests.

    python -m tests.e2e.edge_receipts_probe <the edge's folder>
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from nats.js.errors import NotFoundError

from adapters.nats import EDGE_RECEIPTS
from exchange.servers.edge_heal import hub_sequence
from exchange.servers.edge_node import connect_local, running_edge


async def hub_sequences(folder: Path) -> list[int]:
    doc = running_edge(folder)
    if doc is None:
        raise SystemExit("no edge runs from that folder")
    nc = await connect_local(doc["url"], Path(doc["seed"]))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(EDGE_RECEIPTS)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            try:
                msg = await js.get_msg(EDGE_RECEIPTS, seq)
            except NotFoundError:
                continue
            hub = hub_sequence(msg.headers)
            out.append(-1 if hub is None else hub)
        return out
    finally:
        await nc.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(hub_sequences(Path(sys.argv[1])))))
