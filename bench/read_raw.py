"""This machine's raw figures for the read benchmark, measured in the same run: asyncpg round
trips and durable single-row commits on the exchange's own database, and a bare Starlette
"hello" app on the exchange's uvicorn settings (run as a child process) for the same load
generator."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import asyncpg


async def raw_postgres(db_url: str, seconds: float) -> dict[str, float]:
    """asyncpg round trips and durable single-row commits on the exchange's own database."""

    async def loop(call: Any) -> tuple[int, float, list[float]]:
        n, lat, start = 0, [], time.perf_counter()
        while (t := time.perf_counter()) - start < seconds:
            await call()
            lat.append(time.perf_counter() - t)
            n += 1
        return n, time.perf_counter() - start, lat

    conns = [await asyncpg.connect(db_url) for _ in range(8)]
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10)
    try:
        one = conns[0]
        n, took, _ = await loop(lambda: one.fetchval("SELECT 1"))
        select1 = n / took
        done = await asyncio.gather(*(loop(lambda c=c: c.fetchval("SELECT 1")) for c in conns))
        select1_8 = sum(d[0] for d in done) / max(d[1] for d in done)
        n, took, _ = await loop(lambda: pool.fetchval("SELECT 1"))
        pooled = n / took
        await one.execute(
            "CREATE TABLE raw_commit (id bigserial PRIMARY KEY, "
            "at timestamptz NOT NULL, note text NOT NULL)"
        )
        n, took, lat = await loop(
            lambda: one.execute("INSERT INTO raw_commit (at, note) VALUES (now(), $1)", "审计")
        )
        lat.sort()
        return {
            "raw_pg_select1_per_s": round(select1),
            "raw_pg_select1_per_s_8_connections": round(select1_8),
            "raw_pg_pool_select1_per_s": round(pooled),
            "raw_pg_commit_per_s": round(n / took),
            "raw_pg_commit_p50_ms": round(lat[len(lat) // 2] * 1000, 3),
        }
    finally:
        with contextlib.suppress(Exception):
            await conns[0].execute("DROP TABLE IF EXISTS raw_commit")
        await pool.close()
        for c in conns:
            await c.close()


def hello_server_main() -> None:
    """A child process: a bare Starlette app on the exchange's uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def hello(request: Request) -> Response:
        return Response(b"hello", media_type="text/plain")

    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then (with
    # protocol 0, Nagle holds the body back behind the headers for a delayed ACK, ~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        Starlette(routes=[Route("/hello", hello)]),
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
