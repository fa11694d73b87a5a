"""A database server gone silent (its host lost, its sockets never closed) is an error on the
exchange's pooled connections within the TCP user timeout (half a minute in service), not a hang
of a quarter of an hour (exchange/servers/keepalive.py).

The client runs as a host of its own (a network namespace) and reaches PostgreSQL through a
relay on the bridge; taking the host's link down makes every packet vanish, as a lost machine
or a cut cable does: nothing is refused or reset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from exchange.servers import netns
from exchange.servers.netns import Network
from exchange.settings import Settings

# The clients give up after USER_TIMEOUT_MS rather than the 30 s of service, so the test waits
# seconds, not half a minute, while still proving that the settings reach the socket (asyncpg)
# and libpq (the ledger): without them the wait is TCP's ~15 minutes. That the service's
# value is the one set is checked in tests/unit/test_database_urls.py.
USER_TIMEOUT_MS = 5_000
SHORTER = """
import os
from exchange.servers import keepalive

keepalive.USER_TIMEOUT_MS = int(os.environ["USER_TIMEOUT_MS"])
keepalive.LIBPQ["tcp_user_timeout"] = os.environ["USER_TIMEOUT_MS"]
"""

# Each client: ready once it has used a connection; on a line from the test it uses it again
# and says whether that answered or failed, and after how long.
TIMED = """
print("ready", flush=True)
sys.stdin.readline()
began = time.monotonic()
try:
    use()
    print("answered", flush=True)
except Exception as exc:
    print(f"failed {time.monotonic() - began:.1f} {type(exc).__name__}", flush=True)
"""
POOL = (
    SHORTER
    + """
import asyncio, sys, time
import asyncpg
from exchange.servers.keepalive import keepalive

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
pool = loop.run_until_complete(
    asyncpg.create_pool(sys.argv[1], min_size=1, max_size=1, init=keepalive)
)

def use():
    loop.run_until_complete(pool.fetchval("SELECT 1"))

use()
"""
    + TIMED
)
LEDGER = (
    SHORTER
    + """
import os, sys, time, uuid
from exchange.ingest.ledger import Ledger

ledger = Ledger(sys.argv[1], os.environ["CIPHER"], bytes.fromhex(os.environ["PSEUDONYM"]))

def use():
    ledger.positions_of([uuid.uuid4()])

use()
"""
    + TIMED
)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def relay(listen: str, to_host: str, to_port: int) -> AsyncIterator[int]:
    """A TCP relay on ``listen`` (a port of its own) to the database; yields the port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(to_host, to_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def silenced(settings: Settings, script: str) -> str:
    """``script`` run as a host of its own on the test's database; the host cut off once the
    script is ready; what the script then says."""
    assert netns.available(), "this test needs root and iproute2 (network namespaces)"
    assert settings.database_url
    db = urlsplit(settings.database_url)
    assert db.hostname and db.port
    network = Network(1)
    network.make()
    try:
        async with relay(network.gateway, db.hostname, db.port) as port:
            userinfo = db.netloc.rpartition("@")[0]
            url = urlunsplit(db._replace(netloc=f"{userinfo}@{network.gateway}:{port}"))
            client = await asyncio.create_subprocess_exec(
                *network.command(0, [sys.executable, "-c", script, url]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={
                    **os.environ,
                    "CIPHER": settings.secrets.ledger_cipher_key,
                    "PSEUDONYM": settings.secrets.pseudonym_key.hex(),
                    "USER_TIMEOUT_MS": str(USER_TIMEOUT_MS),
                },
            )
            assert client.stdin and client.stdout
            try:
                ready = await asyncio.wait_for(client.stdout.readline(), 60)
                assert ready.decode().strip() == "ready"
                network.cut(0)  # the client's host loses its link: packets vanish
                client.stdin.write(b"go\n")
                await client.stdin.drain()
                # Without the keepalive settings this waits for TCP to give up (~15 min).
                limit = USER_TIMEOUT_MS / 1000 + 30
                return (await asyncio.wait_for(client.stdout.readline(), limit)).decode()
            finally:
                with contextlib.suppress(ProcessLookupError):
                    client.kill()
                await client.wait()
    finally:
        network.remove()


async def test_a_pooled_connection_to_a_server_gone_silent_fails_within_the_user_timeout(
    settings: Settings,
) -> None:
    outcome = await silenced(settings, POOL)
    assert outcome.startswith("failed "), outcome
    # Not before the user timeout either: it is what gave up; nothing else broke the link.
    waited = float(outcome.split()[1])
    assert USER_TIMEOUT_MS / 1000 - 1 <= waited <= USER_TIMEOUT_MS / 1000 + 10, outcome


async def test_the_ledger_fails_on_a_server_gone_silent_rather_than_hang(
    settings: Settings,
) -> None:
    outcome = await silenced(settings, LEDGER)
    assert outcome.startswith("failed "), outcome
    waited = float(outcome.split()[1])
    assert USER_TIMEOUT_MS / 1000 - 1 <= waited <= USER_TIMEOUT_MS / 1000 + 25, outcome
