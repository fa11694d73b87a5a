"""The read benchmark's load generator: HTTP/1.1 keep-alive GETs written by hand over raw
asyncio streams, run as its own process so that its CPU is its own (a full client such as
httpx spends ~1.5 ms of CPU per request, DESIGN.md, which would cap the figures it measures).

It reads one JSON document from standard input: where to connect, the requests (each a path
with the number of Bundle entries its answer must hold, or null), the headers, and the
phases. Before each phase it prints ``{"ready": <phase>}`` and waits for a line on standard
input, so the caller can read the server's CPU exactly around it; after it, one JSON line
with the phase's figures. Phases:

- ``verify``: every request once, in order, on one connection; every answer checked.
- ``rate``: an open-loop schedule of ``rate`` requests/s for ``seconds`` over a pool of
  ``connections``; each latency runs from the request's *scheduled* send time, so a slow
  answer delays the ones queued behind it in the figures too (no coordinated omission).
- ``flat``: ``connections`` closed loops, each sending its next request when the previous
  answer is in, for ``warmup`` + ``seconds``; only the last ``seconds`` are counted.

Any status but 200, a broken connection or an answer that fails its check is an error. In
the load phases every ``check_every``-th answer is parsed and checked: a FHIR Bundle with
the expected number of entries.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

SPIN = 0.002  # seconds before a scheduled send when the rate phase stops sleeping
Request = tuple[bytes, int | None]  # the request's bytes, the entries its answer must hold


class ConnectionLost(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read status and body by
    Content-Length (or chunks, should a server send them)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes) -> tuple[int, bytes]:
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = -1, False, False
            for line in head[:-4].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if length >= 0:
                body = await self.reader.readexactly(length)
            elif chunked:
                body = await self._chunks()
            else:
                body, close = await self.reader.read(), True
        except (
            OSError,
            EOFError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            self.close()
            raise ConnectionLost(type(exc).__name__) from None
        if close:
            self.close()
        return status, body

    async def _chunks(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers are expected
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def check(body: bytes, expected: int | None) -> str | None:
    """None if the answer is a Bundle with the expected entries (or, for a page, a whole HTML
    document); else what is wrong."""
    if body.lstrip().startswith(b"<!DOCTYPE html"):
        return None if body.rstrip().endswith(b"</html>") else "an HTML page cut short"
    try:
        doc = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return f"not a Bundle ({doc.get('resourceType') if isinstance(doc, dict) else '?'})"
    if expected is not None:
        found = sum(
            1
            for e in doc.get("entry", [])
            if e.get("resource", {}).get("resourceType") != "OperationOutcome"
        )
        if found != expected:
            return f"{found} entries, {expected} expected"
    return None


def refusal(status: int, body: bytes) -> str:
    """A short, data-free name for a failed answer: status and OperationOutcome code."""
    try:
        code = json.loads(body)["issue"][0]["details"]["coding"][0]["code"]
    except (ValueError, LookupError, TypeError):
        code = "?"
    return f"{status} {code}"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, counted answers only
    service: list[float] = field(default_factory=list)  # send → answer, counted answers only
    late: list[float] = field(default_factory=list)  # rate phase: send time − scheduled time
    answered: int = 0  # every answer in the phase, counted or not (for CPU per request)
    errors: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    checked: int = 0
    bytes: int = 0
    ok: int = 0

    def failed(self, what: str) -> None:
        self.errors += 1
        self.samples[what] = self.samples.get(what, 0) + 1


class Phases:
    def __init__(self, config: dict[str, Any]) -> None:
        self.host, self.port = config["host"], int(config["port"])
        head = "".join(f"{k}: {v}\r\n" for k, v in config.get("headers", {}).items())
        host = f"{self.host}:{self.port}"
        self.requests: list[Request] = [
            (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode(), expected)
            for path, expected in config["requests"]
        ]
        self.check_every = int(config.get("check_every", 25)) or -1  # 0: check none
        self.random = random.Random(config.get("seed", 1))

    def checks(self, i: int) -> bool:
        return self.check_every > 0 and i % self.check_every == 0

    def pick(self) -> Request:
        return self.requests[self.random.randrange(len(self.requests))]

    async def one(
        self, conn: Connection, request: Request, tally: Tally, counted: bool, check_this: bool
    ) -> None:
        try:
            status, body = await conn.get(request[0])
        except ConnectionLost as exc:
            tally.answered += 1
            if counted:
                tally.failed(f"connection {exc}")
            return
        tally.answered += 1
        if not counted:
            return
        if status != 200:
            tally.failed(refusal(status, body))
            return
        tally.ok += 1
        tally.bytes += len(body)
        if check_this:
            tally.checked += 1
            problem = check(body, request[1])
            if problem:
                tally.failed(f"200 but {problem}")

    async def verify(self, phase: dict[str, Any], tally: Tally) -> float:
        conn = Connection(self.host, self.port)
        start = time.perf_counter()
        for request in self.requests:
            sent = time.perf_counter()
            await self.one(conn, request, tally, True, True)
            tally.latencies.append(time.perf_counter() - sent)
        conn.close()
        return time.perf_counter() - start

    async def rate(self, phase: dict[str, Any], tally: Tally) -> float:
        rate, seconds = float(phase["rate"]), float(phase["seconds"])
        queue: asyncio.Queue[tuple[float, Request, int] | None] = asyncio.Queue()
        conns = [Connection(self.host, self.port) for _ in range(int(phase["connections"]))]
        for conn in conns:  # open them before the clock starts
            await self.one(conn, self.requests[0], Tally(), False, False)
        total = int(rate * seconds)
        start = time.perf_counter() + 0.01

        async def schedule() -> None:
            for i in range(total):
                at = start + i / rate
                # The loop's timers wake up to a millisecond late (epoll's resolution), which
                # would be counted against the server: sleep to just before, then yield until
                # it is time (a little CPU, at this phase's modest rate).
                delay = at - time.perf_counter() - SPIN
                if delay > 0:
                    await asyncio.sleep(delay)
                while time.perf_counter() < at:
                    await asyncio.sleep(0)
                queue.put_nowait((at, self.pick(), i))
            for _ in conns:
                queue.put_nowait(None)

        async def work(conn: Connection) -> None:
            while (job := await queue.get()) is not None:
                at, request, i = job
                sent = time.perf_counter()
                await self.one(conn, request, tally, True, self.checks(i))
                done = time.perf_counter()
                tally.latencies.append(done - at)
                tally.service.append(done - sent)
                tally.late.append(sent - at)

        await asyncio.gather(schedule(), *(work(c) for c in conns))
        for conn in conns:
            conn.close()
        return time.perf_counter() - start

    async def flat(self, phase: dict[str, Any], tally: Tally) -> float:
        seconds, warmup = float(phase["seconds"]), float(phase.get("warmup", 1.0))
        conns = [Connection(self.host, self.port) for _ in range(int(phase["connections"]))]
        begin = time.perf_counter()
        counted_from, end = begin + warmup, begin + warmup + seconds
        n = 0

        async def work(conn: Connection) -> None:
            nonlocal n
            while (sent := time.perf_counter()) < end:
                n += 1
                counted = sent >= counted_from
                await self.one(conn, self.pick(), tally, counted, self.checks(n))
                if counted:
                    done = time.perf_counter()
                    tally.latencies.append(done - sent)

        await asyncio.gather(*(work(c) for c in conns))
        for conn in conns:
            conn.close()
        return seconds


def quantiles_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run(config: dict[str, Any]) -> None:
    phases = Phases(config)
    loop = asyncio.get_running_loop()
    for phase in config["phases"]:
        print(json.dumps({"ready": phase["name"]}), flush=True)
        if not await loop.run_in_executor(None, sys.stdin.readline):
            return  # the caller went away
        tally = Tally()
        cpu = time.process_time()
        elapsed = await getattr(phases, phase["kind"])(phase, tally)
        cpu = time.process_time() - cpu
        counted = len(tally.latencies)
        print(
            json.dumps(
                {
                    "phase": phase["name"],
                    "requests": counted,
                    "answered": tally.answered,
                    "errors": tally.errors,
                    "error_kinds": tally.samples,
                    "checked": tally.checked,
                    "elapsed_s": round(elapsed, 3),
                    "rps": round(counted / elapsed, 1) if elapsed else 0,
                    "response_bytes": round(tally.bytes / tally.ok) if tally.ok else 0,
                    **quantiles_ms(tally.latencies),
                    "service": quantiles_ms(tally.service),
                    "send_late": quantiles_ms(tally.late),
                    "cpu_s": round(cpu, 3),
                }
            ),
            flush=True,
        )


def main() -> None:
    # The caller stops this process; a Ctrl-C meant for the whole run must not end a phase
    # half-way and be mistaken for a failure of the exchange.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline())
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
