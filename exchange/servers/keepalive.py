"""Database connections that notice a server gone silent.

A PostgreSQL primary whose host is lost (power, a cut cable, a hung kernel) closes nothing: its
sockets stay open on our side, and a query sent on one waits for TCP's retransmissions to give
up, about fifteen minutes on Linux, while an idle pooled connection notices nothing at all (a
socket sends no keepalive probe unless asked to). After a failover the exchange's pools would
hold such connections.

So every database connection probes an idle peer after ``IDLE_S`` seconds (``COUNT`` probes,
``INTERVAL_S`` apart) and gives up on data unacknowledged for ``USER_TIMEOUT_MS``: a dead
server is an error within about half a minute, and the pool opens a new connection, which the
multi-host URL takes to whichever server is now the primary.

``keepalive`` is an asyncpg pool's ``init`` (run on each new connection); ``LIBPQ`` holds the
same as libpq's parameters, for the ledger's psycopg connections (a URL's own values win).
"""

from __future__ import annotations

import socket
from typing import Any

IDLE_S = 10
INTERVAL_S = 5
COUNT = 3
USER_TIMEOUT_MS = 30_000

LIBPQ = {
    "keepalives": "1",
    "keepalives_idle": str(IDLE_S),
    "keepalives_interval": str(INTERVAL_S),
    "keepalives_count": str(COUNT),
    "tcp_user_timeout": str(USER_TIMEOUT_MS),
}


def set_keepalive(sock: socket.socket) -> None:
    """TCP keepalive and the user timeout on a connected TCP socket."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, COUNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


async def keepalive(conn: Any) -> None:
    """An asyncpg pool's ``init``: the connection's TCP socket set as above (a Unix socket
    has no peer to lose and is left as it is)."""
    sock = conn._transport.get_extra_info("socket")  # asyncpg exposes no socket of its own
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        set_keepalive(sock)
